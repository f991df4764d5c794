from django.urls import path

from sms import callbacks
from sms.hl7 import views as hl7_views

app_name = "sms"

urlpatterns = [
    path("ingest/<str:tenant_id>/<str:environment>/", hl7_views.ingest, name="hl7-ingest"),
    path("callbacks/<str:provider>/", callbacks.provider_callback, name="provider-callback"),
]
