from django.urls import path

from sms import apis

P = "tenants/<str:tenant_id>/sms/"

urlpatterns = [
    path(P + "consent/", apis.ConsentApi.as_view(), name="api-sms-consent"),
    path(P + "numbers/", apis.PhoneNumberListApi.as_view(), name="api-sms-numbers"),
    path(P + "settings/<int:endpoint_pk>/", apis.SmsSettingsApi.as_view(), name="api-sms-settings"),
    path(P + "certificates/", apis.CertificateListApi.as_view(), name="api-sms-certificates"),
    path(P + "appointments/", apis.AppointmentListApi.as_view(), name="api-sms-appointments"),
    path(P + "messages/", apis.MessageListApi.as_view(), name="api-sms-messages"),
    path(P + "opt-outs/", apis.OptOutListApi.as_view(), name="api-sms-opt-outs"),
]
