from django.urls import path

from connector.portal import approval, views, write_backs
from connector.webhooks import portal as webhooks_portal
from sms import portal as sms_portal

app_name = "portal"

urlpatterns = [
    path("setup/", views.setup, name="setup"),
    path("setup/configure/", views.configure, name="configure"),
    path("setup/endpoints/<int:pk>/edit/", views.endpoint_edit, name="endpoint-edit"),
    path("setup/endpoints/<int:pk>/validate/", views.endpoint_validate, name="endpoint-validate"),
    path("setup/endpoints/<int:pk>/disable/", views.endpoint_disable, name="endpoint-disable"),
    path("setup/endpoints/<int:pk>/delete/", views.endpoint_delete, name="endpoint-delete"),
    path("setup/endpoints/<int:pk>/status.json", views.endpoint_status, name="endpoint-status"),
    path("setup/sms/", sms_portal.sms_step, name="sms"),
    path("setup/sms/numbers/<int:pk>/status.json", sms_portal.number_status, name="sms-number-status"),
    path("setup/sms/endpoints/<int:pk>/", sms_portal.endpoint_settings, name="sms-endpoint-settings"),
    path("setup/approve/", approval.approve, name="approve"),
    path("setup/approve/<int:pk>/sign-in/", approval.approval_begin, name="approval-begin"),
    path("setup/approve/<int:pk>/decide/", approval.approval_decide, name="approval-decide"),
    path("approval/callback/", approval.approval_callback, name="approval-callback"),
    path("write-backs/", write_backs.write_back_list, name="write-backs"),
    path("write-backs/retry/", write_backs.write_back_retry, name="write-back-retry"),
    path("webhooks/", webhooks_portal.webhooks, name="webhooks"),
    path(
        "webhooks/endpoints/<int:pk>/",
        webhooks_portal.webhook_endpoint_action,
        name="webhook-endpoint-action",
    ),
    path("webhooks/deliveries/<int:pk>/send-again/", webhooks_portal.webhook_redeliver, name="webhook-redeliver"),
    path("setup/review/", views.review, name="review"),
    path("setup/records.json", views.records_download, name="records-download"),
    path("setup/records/<int:pk>/rotate-token/", views.record_rotate_token, name="record-rotate-token"),
]
