from django import forms

from sms.models import AppointmentIdField
from sms.texts import SHIPPED

LANGUAGES = [("en", "English"), ("es", "Spanish")]
MESSAGE_KINDS = [
    ("confirmation", "Confirmation"),
    ("reschedule", "Reschedule"),
    ("cancellation", "Cancellation"),
    ("reminder", "Reminder"),
    ("help", "Answer to HELP"),
    ("opt_out", "Answer to STOP"),
    ("opt_in", "Answer to START"),
    ("guest_invite", "Guest invite"),
]


class ConsentForm(forms.Form):
    on_behalf = forms.BooleanField(
        required=False,
        label="Our organization lets the connector send text messages to patients on our behalf.",
    )
    patients_consented = forms.BooleanField(
        required=False,
        label="We confirm that our patients agreed to receive text messages about their visits.",
    )


class NumberRequestForm(forms.Form):
    country = forms.ChoiceField(choices=[("US", "United States"), ("CA", "Canada"), ("GB", "United Kingdom")])
    toll_free = forms.BooleanField(required=False, initial=True, label="Toll-free number")


class VerificationForm(forms.Form):
    business_name = forms.CharField(max_length=200)
    # A text input: the browser's type="url" check would refuse "example.org", which assume_scheme accepts.
    business_website = forms.URLField(
        assume_scheme="https", widget=forms.TextInput(attrs={"inputmode": "url", "autocomplete": "url"})
    )
    contact_email = forms.EmailField()
    contact_phone = forms.CharField(max_length=30)
    monthly_volume = forms.IntegerField(min_value=1, label="Expected texts per month")
    use_case = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        initial="Appointment confirmations and reminders for video visits, with a link to join.",
    )
    sample_message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), initial=SHIPPED["en"]["reminder"]
    )
    opt_in_image_urls = forms.CharField(
        required=False,
        label="Opt-in proof (image URLs)",
        help_text="Links to screenshots of where patients agree to texts; one per line (Twilio requires them).",
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def clean_opt_in_image_urls(self) -> list[str]:
        urls = [line.strip() for line in self.cleaned_data["opt_in_image_urls"].splitlines() if line.strip()]
        validator = forms.URLField(assume_scheme="https").clean
        return [validator(url) for url in urls]


class CertificateForm(forms.Form):
    environment = forms.ChoiceField(choices=[("test", "Test"), ("production", "Production")])
    certificate_file = forms.FileField(required=False, label="Certificate file (.cer or .pem)")
    certificate_text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}), label="…or paste the Base64 (PEM) text"
    )

    def clean(self):
        data = super().clean()
        if not data.get("certificate_file") and not data.get("certificate_text", "").strip():
            raise forms.ValidationError("Choose a certificate file or paste its Base64 text.")
        return data


class EndpointSmsForm(forms.Form):
    phone_number = forms.ChoiceField(required=False, label="Sending number")
    confirmations_enabled = forms.BooleanField(required=False, label="Send confirmations")
    reminders_enabled = forms.BooleanField(required=False, label="Send reminders")
    reminder_lead_times = forms.CharField(
        required=False, help_text="Before the visit, comma-separated: e.g. 24h, 1h or 30m."
    )
    quiet_hours_start = forms.TimeField(help_text="No texts from this time (the patient's local time)…")
    quiet_hours_end = forms.TimeField(
        help_text="…until this time; a reminder falling inside moves to the nearest allowed time."
    )
    default_language = forms.ChoiceField(choices=LANGUAGES)
    contact = forms.CharField(required=False, max_length=200, help_text="Named in the answer to HELP.")
    appointment_id_field = forms.ChoiceField(
        choices=AppointmentIdField.choices,
        label="Appointment ID field",
        help_text="Where the EHR's scheduling messages carry the appointment's own ID (see the feed's guide).",
    )
    phone_region = forms.CharField(
        required=False,
        max_length=2,
        label="Patients' country",
        help_text="Two letters, e.g. US, CA, GB: for numbers the EHR sends without a country code. "
        "Empty: the sending number's country.",
    )

    def __init__(self, *args, numbers=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["phone_number"].choices = [("", "— none —")] + [(str(n.pk), n.number) for n in numbers]
