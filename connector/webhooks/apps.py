from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "connector.webhooks"
    label = "webhooks"
    verbose_name = "Outbound webhooks"
