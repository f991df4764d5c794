from django.apps import AppConfig


class SandboxEhrConfig(AppConfig):
    name = "connector.sandbox_ehr"
    label = "sandbox_ehr"
    verbose_name = "Sandbox EHR (development peer)"
