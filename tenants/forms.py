from django import forms

from tenants.models import DataRegion, EhrVendor, Role, TokenScope


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


class MemberInviteForm(forms.Form):
    email = forms.EmailField(
        label="Work e-mail address",
        help_text="The address of their Microsoft work account in your organization.",
    )
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)
    ehr_username = forms.CharField(
        max_length=150,
        required=False,
        label="EHR username",
        help_text="For EHR approvers only: their user name in the EHR, checked at approval.",
    )


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
    ehr_username = forms.CharField(max_length=150, required=False, label="EHR username")
