from django import forms

from connector.models import Environment, FhirEndpoint


class EndpointForm(forms.ModelForm):
    base_url = forms.CharField(
        label="FHIR base URL",
        max_length=500,
        help_text="The FHIR R4 base URL your EHR team gives you, e.g. https://fhir.example.org/api/FHIR/R4",
    )

    class Meta:
        model = FhirEndpoint
        fields = [
            "base_url",
            "environment",
            "label",
            "time_zone",
            "smart_client_id",
            "write_back_enabled",
            "write_join_link",
        ]
        widgets = {"environment": forms.RadioSelect}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["environment"].choices = Environment.choices
        # static/js/endpoint-form.js proposes the browser's zone when the organization has none yet.
        if not self.is_bound and not self.instance.pk and "time_zone" not in self.initial:
            self.fields["time_zone"].widget.attrs["data-browser-default"] = "true"


class ApproversForm(forms.Form):
    usernames = forms.CharField(
        label="EHR analysts who approve",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: their EHR username, their fhirUser (Practitioner/123 or its full URL) or "
        "their Practitioner identifier (a value, or system|value such as an NPI). Many EHRs send no "
        "username; the list below shows which form matched at each analyst's last sign-in.",
    )


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
