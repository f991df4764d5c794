from django.apps import AppConfig


class SmsConfig(AppConfig):
    name = "sms"
    verbose_name = "SMS notifications"

    def ready(self) -> None:
        from sms.hl7 import feed_setup  # noqa: F401  (connects the signals that forget a changed setup)
