from django import forms

from tenants.models import DataRegion, EhrVendor, TokenScope


class AccessRequestForm(forms.Form):
    organization_name = forms.CharField(max_length=200, label="Organization name")
    microsoft_tenant_id = forms.CharField(
        max_length=64,
        label="Microsoft 365 tenant ID",
        help_text="A GUID; find it in the Microsoft Entra admin center under Overview.",
    )
    ehr_vendor = forms.ChoiceField(choices=EhrVendor.choices, label="EHR vendor")
    data_region = forms.ChoiceField(choices=DataRegion.choices, label="Data region")
    technical_contact_email = forms.EmailField(label="EHR technical contact email")
    requester_email = forms.EmailField(label="Your email", required=False)


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What will use it, e.g. 'Reporting warehouse'.")
    scope = forms.ChoiceField(choices=TokenScope.choices)
