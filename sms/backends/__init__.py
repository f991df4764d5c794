"""SMS backends, chosen by dotted path like Django's email backends.

    SMS_BACKEND = "sms.backends.console.ConsoleSmsBackend"  # the demo: texts printed by the worker
    SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"    # tests: texts kept in `locmem.outbox`
    SMS_BACKEND = "sms.backends.twilio.TwilioSmsBackend"    # Twilio
    SMS_BACKEND = "sms.backends.acs.AcsSmsBackend"          # Azure Communication Services

The interface is in `sms.backends.base`; docs/sms-providers.md has the
settings and the provider-side setup (callback URLs, Event Grid, toll-free
verification) of each backend.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from sms.backends.base import (
    AvailableNumber,
    BaseSmsBackend,
    CallbackRejected,
    CallbackResult,
    DeliveryReport,
    InboundText,
    ProvisionedNumber,
    SentMessage,
    SmsError,
    SmsErrorCode,
)

DEFAULT_SMS_BACKEND = "sms.backends.console.ConsoleSmsBackend"

__all__ = [
    "DEFAULT_SMS_BACKEND",
    "AvailableNumber",
    "BaseSmsBackend",
    "CallbackRejected",
    "CallbackResult",
    "DeliveryReport",
    "InboundText",
    "ProvisionedNumber",
    "SentMessage",
    "SmsError",
    "SmsErrorCode",
    "get_sms_backend",
]


def get_sms_backend(path: str | None = None) -> BaseSmsBackend:
    """An instance of the SMS backend at `path`, or of `settings.SMS_BACKEND`.

    Backends are cheap to make and keep no state between calls that matters
    (SDK clients are made per instance), so callers make one per use.
    """
    path = path or getattr(settings, "SMS_BACKEND", DEFAULT_SMS_BACKEND)
    try:
        backend_class = import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(f"SMS_BACKEND {path!r} cannot be imported: {error}") from error
    if not (isinstance(backend_class, type) and issubclass(backend_class, BaseSmsBackend)):
        raise ImproperlyConfigured(f"SMS_BACKEND {path!r} is not a BaseSmsBackend subclass.")
    return backend_class()
