"""Checks a FHIR base URL the way the configuration portal needs it checked.

An administrator types a base URL; before anyone approves it, the connector
asks the server two questions and explains any "no" in words the
administrator can take to their EHR team:

1. `GET {base}/metadata`: a FHIR R4 (4.0.x) CapabilityStatement that offers
   FHIR resources as a server.
2. `GET {base}/.well-known/smart-configuration`: SMART on FHIR with an
   authorization and a token endpoint over https, EHR launch (`launch-ehr`),
   PKCE with S256 and asymmetric client authentication (private_key_jwt).

Then it holds both documents against the table of features and what each
needs (connector/endpoint_features.py): what launches cannot do without fails
the check; a feature the server cannot carry (or does not say it can) makes
the result "OK with gaps" (`code` "ok_with_gaps"), naming the feature lost.
"Everything the connector needs" is said only when every requirement is met.

All calls go through `connector.ehr_http`, so the address guard rails apply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils import timezone

from connector.ehr_http import EhrHttpError, ehr_get_json, is_insecure_host
from connector.endpoint_features import (
    ASYMMETRIC_CLIENT,
    MISSING,
    ServerOffer,
    features_evaluate,
    gaps_summary,
    requirement_status,
    server_interactions,
)

logger = logging.getLogger(__name__)

# The resources whose read access the details list (what each feature needs is in endpoint_features).
LISTED_RESOURCES = ("Patient", "Practitioner", "Appointment", "Encounter", "Communication")
SMART_CONFIGURATION_PATH = "/.well-known/smart-configuration"
EPIC_HINT = "for Epic it usually ends in /api/FHIR/R4"

# Steps, in order, as reported to `progress` and in `details["steps"]`.
STEP_METADATA = "metadata"
STEP_SMART = "smart_configuration"


# --- The base URL ------------------------------------------------------------------------------


def normalize_fhir_base_url(url: str) -> str:
    """The canonical form of a FHIR base URL, or a ValidationError that says what to fix.

    Lower-case scheme and host, no default port, no trailing slash, no query,
    fragment or credentials; https unless the host is in EHR_INSECURE_HOSTS.
    """
    url = (url or "").strip()
    if not url:
        raise ValidationError("Enter the FHIR base URL of your EHR.", code="required")
    if any(ch.isspace() for ch in url):
        raise ValidationError("The address must not contain spaces.", code="invalid")
    if "://" not in url:
        raise ValidationError(
            "Enter the full address, starting with https:// (for example "
            "https://fhir.example.org/api/FHIR/R4).",
            code="invalid",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError("The port or host in that address is not valid.", code="invalid") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValidationError("Use an https:// address: EHRs only serve FHIR over TLS.", code="insecure")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "Enter the FHIR base URL without a user name or password: "
            "the connector signs in with SMART on FHIR.",
            code="credentials",
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValidationError(
            "Enter a full address with a host name, like https://fhir.example.org/api/FHIR/R4.",
            code="invalid",
        )
    try:
        host = host.encode("idna").decode("ascii").lower() if not _is_ipv6(host) else host.lower()
    except UnicodeError:
        raise ValidationError("The host name in that address is not valid.", code="invalid") from None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValidationError("Enter the FHIR base URL without a query string or fragment.", code="query")
    if scheme == "http" and not is_insecure_host(host):
        raise ValidationError("Use an https:// address: EHRs only serve FHIR over TLS.", code="insecure")
    path = parts.path.rstrip("/")
    for suffix in ("/metadata", SMART_CONFIGURATION_PATH):
        if path.lower().endswith(suffix):
            raise ValidationError(
                f"Enter the FHIR base URL itself, without {suffix} at the end.", code="not_base"
            )
    netloc = f"[{host}]" if _is_ipv6(host) else host
    if port is not None and port != (443 if scheme == "https" else 80):
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{path}"


def _is_ipv6(host: str) -> bool:
    return ":" in host


# --- The result --------------------------------------------------------------------------------


@dataclass
class EndpointCheckResult:
    """What a check found. `details` holds what the server offers and each step's outcome."""

    ok: bool
    code: str
    message: str
    checked_at: datetime
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "code": self.code,
            "message": self.message,
            "checked_at": self.checked_at.isoformat(),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EndpointCheckResult:
        checked_at = datetime.fromisoformat(data["checked_at"])
        if timezone.is_naive(checked_at):
            checked_at = checked_at.replace(tzinfo=UTC)
        return cls(
            ok=bool(data["ok"]),
            code=str(data["code"]),
            message=str(data["message"]),
            checked_at=checked_at,
            details=dict(data.get("details") or {}),
        )


class _CheckFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- The check ---------------------------------------------------------------------------------


def check_fhir_endpoint(
    base_url: str, *, progress: Callable[[str], None] | None = None
) -> EndpointCheckResult:
    """Check a FHIR base URL; never raises for a problem on the remote side.

    `progress` is called with each step's name ("metadata",
    "smart_configuration") before it runs, so a task can show how far it got.
    The first failing step ends the check; later steps are recorded as skipped.
    """
    details: dict[str, Any] = {
        "base_url": base_url,
        "steps": {STEP_METADATA: {"status": "skipped"}, STEP_SMART: {"status": "skipped"}},
    }

    def fail(step: str | None, code: str, message: str) -> EndpointCheckResult:
        if step:
            details["steps"][step] = {"status": "failed", "code": code, "message": message}
        logger.info("FHIR endpoint check failed: %s", code)
        return EndpointCheckResult(
            ok=False, code=code, message=message, checked_at=timezone.now(), details=details
        )

    try:
        base = normalize_fhir_base_url(base_url)
    except ValidationError as error:
        return fail(None, "invalid_url", " ".join(error.messages))
    details["base_url"] = base

    documents: dict[str, dict[str, Any]] = {}
    for step, run in ((STEP_METADATA, _check_metadata), (STEP_SMART, _check_smart_configuration)):
        if progress is not None:
            progress(step)
        try:
            documents[step] = run(base, details)
        except _CheckFailed as failure:
            return fail(step, failure.code, failure.message)
        except EhrHttpError as error:
            return fail(step, *_step_http_failure(step, base, error))
        details["steps"][step] = {"status": "ok"}

    offer = ServerOffer.from_documents(documents[STEP_METADATA], documents[STEP_SMART])
    features = features_evaluate(offer)
    details["features"] = features
    details["scopes_supported"] = list(offer.scopes) if offer.scopes is not None else None
    gaps = gaps_summary(features)
    server = f"This is a SMART on FHIR R4 server (FHIR {details.get('fhir_version')})"
    if not gaps:
        return EndpointCheckResult(
            ok=True,
            code="ok",
            message=f"{server} that offers everything the connector needs.",
            checked_at=timezone.now(),
            details=details,
        )
    return EndpointCheckResult(
        ok=True,
        code="ok_with_gaps",
        message=f"OK with gaps. {server}: visits can be launched from the EHR, but not every feature will work. {gaps}",
        checked_at=timezone.now(),
        details=details,
    )


def fetch_smart_configuration(base_url: str) -> dict[str, Any]:
    """The SMART configuration of a FHIR base URL, with its authorization and token endpoints checked.

    Raises EhrHttpError when the server cannot be asked, or when the answer
    lacks either endpoint or names one that is not https.
    """
    response = ehr_get_json(base_url.rstrip("/") + SMART_CONFIGURATION_PATH, accept="application/json")
    try:
        _validate_oauth_endpoints(response.json, base_url.rstrip("/"))
    except _CheckFailed as failure:
        raise EhrHttpError(failure.code, failure.message, permanent=True) from None
    return response.json


def _step_http_failure(step: str, base: str, error: EhrHttpError) -> tuple[str, str]:
    """A transport failure as (code, message), told in the words of the step that met it."""
    if error.code != "bad_status":
        return error.code, error.message
    if step == STEP_SMART and error.status == 404:
        return "no_smart_configuration", (
            f"No SMART configuration at that address ({base}{SMART_CONFIGURATION_PATH} answered 404): "
            "ask your EHR team for the SMART on FHIR R4 base URL."
        )
    if step == STEP_METADATA and error.status == 404:
        return "no_metadata", (
            f"Nothing answered at {base}/metadata (HTTP 404): check that this is the FHIR base URL "
            f"of your EHR ({EPIC_HINT})."
        )
    if step == STEP_METADATA and error.status in (401, 403):
        return error.code, (
            f"The server refused to show its CapabilityStatement (HTTP {error.status}), which FHIR servers "
            f"publish without sign-in: check that this is the FHIR base URL ({EPIC_HINT})."
        )
    return error.code, error.message


def _check_metadata(base: str, details: dict[str, Any]) -> dict[str, Any]:
    statement = ehr_get_json(f"{base}/metadata").json
    resource_type = statement.get("resourceType")
    version = _text(statement.get("fhirVersion"))

    if resource_type == "Conformance" or version.startswith("1.0"):
        shown = f"FHIR {version}" if version else "FHIR DSTU2"
        raise _CheckFailed(
            "fhir_dstu2",
            f"This is a DSTU2 server ({shown}): use the FHIR R4 base URL of your EHR instead — {EPIC_HINT}.",
        )
    if resource_type != "CapabilityStatement":
        raise _CheckFailed(
            "not_capability_statement",
            "The address answered, but not with a FHIR CapabilityStatement: check that this is the "
            f"FHIR base URL ({EPIC_HINT}).",
        )
    details["fhir_version"] = version
    software = statement.get("software")
    if isinstance(software, dict):
        details["software"] = {"name": _text(software.get("name")), "version": _text(software.get("version"))}
    if version.startswith("3.0"):
        raise _CheckFailed(
            "fhir_stu3",
            f"This is an STU3 server (FHIR {version}): use the FHIR R4 base URL of your EHR instead — "
            f"{EPIC_HINT}.",
        )
    if not version.startswith("4.0."):
        shown = f"FHIR {version}" if version else "a FHIR version it does not name"
        raise _CheckFailed(
            "fhir_version_unsupported",
            f"This server speaks {shown}; the connector needs FHIR R4 (4.0.1): "
            f"ask your EHR team for the R4 base URL ({EPIC_HINT}).",
        )

    interactions = server_interactions(statement)
    details["resources"] = sorted(name for name in LISTED_RESOURCES if f"{name}.read" in interactions)
    if not interactions:
        raise _CheckFailed(
            "missing_resources",
            "The server's CapabilityStatement offers no FHIR resources at all (no server-mode rest entry "
            "with interactions): check that this is the FHIR base URL of your EHR "
            f"({EPIC_HINT}); the connector reads Appointment and Encounter.",
        )
    return statement


def _check_smart_configuration(base: str, details: dict[str, Any]) -> dict[str, Any]:
    config = ehr_get_json(f"{base}{SMART_CONFIGURATION_PATH}", accept="application/json").json
    capabilities = [c for c in _list(config.get("capabilities")) if isinstance(c, str)]
    methods = [m for m in _list(config.get("code_challenge_methods_supported")) if isinstance(m, str)]
    details.update(
        {
            "authorization_endpoint": _text(config.get("authorization_endpoint")),
            "token_endpoint": _text(config.get("token_endpoint")),
            "jwks_uri": _text(config.get("jwks_uri")),
            "issuer": _text(config.get("issuer")),
            "capabilities": capabilities,
            "code_challenge_methods": methods,
            "token_endpoint_auth_methods": [
                m for m in _list(config.get("token_endpoint_auth_methods_supported")) if isinstance(m, str)
            ],
        }
    )
    _validate_oauth_endpoints(config, base)
    if "launch-ehr" not in capabilities:
        raise _CheckFailed(
            "no_ehr_launch",
            "The server does not support EHR launch (launch-ehr), so providers could not start visits "
            "from inside the EHR: ask your EHR team to enable SMART EHR launch for this FHIR base URL.",
        )
    if "S256" not in methods:
        raise _CheckFailed(
            "no_pkce",
            "The server does not offer PKCE (S256), which the connector requires to protect sign-ins: "
            "ask your EHR team to enable PKCE with the S256 method for this FHIR base URL.",
        )
    if requirement_status(ASYMMETRIC_CLIENT, ServerOffer.from_documents({}, config)) == MISSING:
        raise _CheckFailed(
            "no_asymmetric_client",
            "The server offers no asymmetric client authentication (neither the client-confidential-asymmetric "
            "capability nor private_key_jwt at its token endpoint), which the connector signs every token "
            "request with (private_key_jwt, RS384): ask your EHR team to enable it for this FHIR base URL.",
        )
    return config


def _validate_oauth_endpoints(config: dict[str, Any], base: str) -> None:
    where = f"{base}{SMART_CONFIGURATION_PATH}"
    names = ("authorization_endpoint", "token_endpoint")
    absent = [name for name in names if not _text(config.get(name))]
    if absent:
        raise _CheckFailed(
            "smart_configuration_incomplete",
            f"The SMART configuration at {where} does not name {_join(absent)}: ask your EHR team to "
            "enable SMART on FHIR (OAuth 2.0) for this FHIR base URL.",
        )
    for name in names:
        endpoint = _text(config.get(name))
        try:
            parts = urlsplit(endpoint)
            host = parts.hostname or ""
        except ValueError:
            parts, host = None, ""
        label = "an authorization endpoint" if name == "authorization_endpoint" else "a token endpoint"
        if parts is None or not host or parts.scheme not in ("http", "https"):
            raise _CheckFailed(
                "smart_configuration_invalid",
                f"The SMART configuration at {where} gives {label} that is not a full web address: "
                "ask your EHR team to correct it.",
            )
        if parts.scheme != "https" and not is_insecure_host(host):
            raise _CheckFailed(
                "insecure_oauth_endpoint",
                f"The SMART configuration names {label} over plain http ({host}): sign-ins must go "
                "over https. Ask your EHR team to publish https endpoints.",
            )


# --- Small readers for untrusted JSON -----------------------------------------------------------


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> Iterable[dict[str, Any]]:
    return (item for item in _list(value) if isinstance(item, dict))


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
