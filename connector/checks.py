"""System checks that report a half-configured installation."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_field_encryption(app_configs, **kwargs):
    if not settings.FIELD_ENCRYPTION_KEYS:
        return [
            Error(
                "FIELD_ENCRYPTION_KEYS is empty.",
                hint="Generate a key with cryptography's Fernet.generate_key() and set it.",
                id="connector.E001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_phone_hash_key(app_configs, **kwargs):
    """Opt-outs are found by a hash keyed by PHONE_HASH_KEY; keyed by SECRET_KEY they die with a rotation."""
    keys = settings.PHONE_HASH_KEY
    if not keys:
        return [
            Error(
                "PHONE_HASH_KEY is empty: opt-outs are keyed by SECRET_KEY, and rotating it would forget every STOP.",
                hint="Set PHONE_HASH_KEY to a new random key followed by the current SECRET_KEY, "
                "then run `manage.py rehash_phone_numbers` (docs/sms.md, Opt-out keys).",
                id="connector.E006",
            )
        ]
    if any(len(key) < 32 for key in keys):
        return [
            Error(
                "PHONE_HASH_KEY holds a key shorter than 32 characters.",
                hint="python -c 'import secrets; print(secrets.token_urlsafe(48))'",
                id="connector.E007",
            )
        ]
    return []


@register(Tags.security)
def check_sign_in(app_configs, **kwargs):
    if not settings.ENTRA_CONFIGURED and not settings.DEMO_SIGN_IN and not settings.DEBUG:
        return [
            Warning(
                "Microsoft Entra ID sign-in is not configured: only staff can sign in (admin).",
                hint="Set ENTRA_CLIENT_ID and ENTRA_CLIENT_SECRET.",
                id="connector.W001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_signing_keys(app_configs, **kwargs):
    from django.core.exceptions import ImproperlyConfigured

    from connector.signing_keys import signing_keys

    if not settings.SMART_SIGNING_KEY_FILES:
        return [
            Error(
                "SMART_SIGNING_KEY_FILES is empty: the connector cannot authenticate to EHRs (private_key_jwt).",
                hint="Run `manage.py generate_signing_key --out /etc/ehr-connector/smart-key.pem` and list the file.",
                id="connector.E002",
            )
        ]
    try:
        signing_keys()
    except (ImproperlyConfigured, OSError) as error:
        return [Error(str(error), id="connector.E003")]
    return []


@register(Tags.compatibility)
def check_provider_backends(app_configs, **kwargs):
    """The configured meeting and SMS backends load, and have the settings they need."""
    from django.core.exceptions import ImproperlyConfigured

    from connector.meetings import get_meeting_backend
    from sms.backends import get_sms_backend

    errors = []
    for setting, load in (("MEETING_BACKEND", get_meeting_backend), ("SMS_BACKEND", get_sms_backend)):
        path = getattr(settings, setting)
        try:
            backend = load(path)
        except (ImproperlyConfigured, ImportError) as error:
            errors.append(Error(f"{setting}={path} cannot be loaded: {error}", id="connector.E004"))
            continue
        for problem in backend.configuration_problems():
            errors.append(Error(f"{setting}={path}: {problem}", id="connector.E005"))
    return errors


@register(Tags.compatibility)
def check_regions(app_configs, **kwargs):
    """A multi-region deployment knows its region, every region's address and the lookup secret."""
    from tenants.regions import config_problems

    return [Error(problem, id="connector.E008") for problem in config_problems()]
