from django.apps import AppConfig


class ConnectorConfig(AppConfig):
    name = "connector"
    verbose_name = "EHR connector"

    def ready(self) -> None:
        from connector import checks  # noqa: F401  (registers system checks)
