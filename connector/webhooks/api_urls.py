from django.urls import path

from connector.webhooks import apis

P = "tenants/<str:tenant_id>/webhooks/"

urlpatterns = [
    path(P, apis.WebhookEndpointListApi.as_view(), name="api-webhooks"),
    path(P + "<int:pk>/", apis.WebhookEndpointDetailApi.as_view(), name="api-webhook"),
    path(
        P + "<int:pk>/rotate-secret/", apis.WebhookSecretRotateApi.as_view(), name="api-webhook-rotate-secret"
    ),
    path(P + "deliveries/", apis.WebhookDeliveryListApi.as_view(), name="api-webhook-deliveries"),
    path(
        P + "deliveries/<int:pk>/redeliver/",
        apis.WebhookRedeliverApi.as_view(),
        name="api-webhook-redeliver",
    ),
]
