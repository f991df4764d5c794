"""What each feature of the connector needs from an EHR, and what a server's discovery documents say.

The endpoint validation (connector/endpoint_checks.py) reads the CapabilityStatement and the SMART
configuration once, then asks this table which features the server can carry. Three outcomes per
requirement:

- met: the server says it offers it;
- missing: the server's documents say it does not (a capability not listed, an interaction not in
  the CapabilityStatement, a grant type not in `grant_types_supported`);
- unconfirmed: the server does not say. SMART's `scopes_supported` "need not be exhaustive" (SMART
  App Launch 2.0, section 2.0.x), so a scope it does not list is something to confirm with the EHR
  team, not a proven gap; the same for a document that publishes no list at all.

A feature marked `core` is what launches cannot work without: a core requirement missing fails
the validation. Any other feature missing or unconfirmed makes the result "OK with gaps", with the
feature named, so the administrator knows what it costs (docs/configuration-portal.md, "What the
validation checks").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MET = "met"
MISSING = "missing"
UNCONFIRMED = "unconfirmed"

# SMART scopes, v1 (`user/Encounter.read`, `user/*.*`) and v2 (`user/Encounter.rs`).
_RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)(\?.*)?$")
_SCOPE_LETTERS = {
    "read": ("read", "r"),
    "search": ("read", "s"),
    "update": ("write", "u"),
    "create": ("write", "c"),
}


@dataclass(frozen=True)
class Requirement:
    """One thing a feature needs. `kind`: capability, auth_method, grant_type, scope or interaction.

    For `scope`, `value` is `<level>/<Type>.<interaction>` with interaction read, search, update or
    create (the check accepts any v1 or v2 spelling, wildcards included); for `interaction`,
    `<Type>.<code>` with a CapabilityStatement code (read, search-type, update, create).
    """

    kind: str
    value: str
    # Any of these satisfies the requirement too (private_key_jwt may be published either way).
    alternatives: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        if self.kind == "capability":
            return f"the SMART capability {self.value}"
        if self.kind == "auth_method":
            return f"the token endpoint authentication method {self.value}"
        if self.kind == "grant_type":
            return f"the {self.value} grant"
        if self.kind == "scope":
            return f"the scope {self.value}"
        resource_type, code = self.value.split(".", 1)
        return f"{code} on {resource_type} in the CapabilityStatement"


@dataclass(frozen=True)
class Feature:
    key: str
    title: str
    requires: tuple[Requirement, ...]
    core: bool = False


def _cap(name: str) -> Requirement:
    return Requirement("capability", name)


def _scope(value: str) -> Requirement:
    return Requirement("scope", value)


def _interaction(value: str) -> Requirement:
    return Requirement("interaction", value)


ASYMMETRIC_CLIENT = Requirement(
    "capability", "client-confidential-asymmetric", alternatives=(("auth_method", "private_key_jwt"),)
)

# The table. Order matters only for how results are listed: core first, then the way a visit goes.
FEATURES: tuple[Feature, ...] = (
    Feature(
        "ehr_launch",
        "Visits started from the EHR (clinician and patient launches)",
        (
            _cap("launch-ehr"),
            # Every token request the connector makes is signed: private_key_jwt, RS384.
            ASYMMETRIC_CLIENT,
            _scope("launch"),
            _scope("openid"),
            _scope("fhirUser"),
        ),
        core=True,
    ),
    Feature(
        "clinician_identity",
        "Knowing which clinician launched (id_token with fhirUser) and EHR approvals",
        (_cap("sso-openid-connect"),),
    ),
    Feature(
        "patient_context",
        "The patient of the launch: a patient reaches only their own appointment; the appointment "
        "search by patient",
        (_cap("context-ehr-patient"), _scope("launch/patient")),
    ),
    Feature(
        "encounter_context",
        "The encounter of the launch: the appointment through Encounter.appointment, unscheduled visits",
        (
            _cap("context-ehr-encounter"),
            _interaction("Encounter.read"),
            _scope("user/Encounter.read"),
            _scope("launch/encounter"),
        ),
    ),
    Feature(
        "schedule",
        "The appointment's schedule: times in the lobby and console, join links until the scheduled end, "
        "no-shows, the department in reports",
        (
            _interaction("Appointment.read"),
            _scope("user/Appointment.read"),
            _scope("patient/Appointment.read"),
        ),
    ),
    Feature(
        "appointment_search",
        "Finding the appointment by the CSN in the launch URL or by a search around now",
        (_interaction("Appointment.search-type"), _scope("user/Appointment.search")),
    ),
    Feature(
        "approver_identifier",
        "Approvers matched by their Practitioner identifier",
        (_interaction("Practitioner.read"),),
    ),
    Feature(
        "write_back",
        "Write-back to the EHR: Encounter status and period, Appointment status, Communication "
        "(SMART Backend Services)",
        (
            Requirement("grant_type", "client_credentials"),
            ASYMMETRIC_CLIENT,
            _interaction("Encounter.read"),
            _interaction("Encounter.update"),
            _interaction("Appointment.update"),
            _interaction("Communication.create"),
            _scope("system/Encounter.read"),
            _scope("system/Encounter.update"),
            _scope("system/Appointment.update"),
            _scope("system/Communication.create"),
        ),
    ),
)


# --- What a server offers ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerOffer:
    """What the server's discovery documents say; None where a document publishes no list."""

    capabilities: frozenset[str]
    interactions: frozenset[str]  # "Appointment.read", ...
    scopes: tuple[str, ...] | None
    auth_methods: frozenset[str] | None
    grant_types: frozenset[str] | None

    @classmethod
    def from_documents(cls, statement: dict[str, Any], smart_configuration: dict[str, Any]) -> ServerOffer:
        return cls(
            capabilities=frozenset(_strings(smart_configuration.get("capabilities")) or ()),
            interactions=frozenset(server_interactions(statement)),
            scopes=_strings(smart_configuration.get("scopes_supported")),
            auth_methods=_frozen(_strings(smart_configuration.get("token_endpoint_auth_methods_supported"))),
            grant_types=_frozen(_strings(smart_configuration.get("grant_types_supported"))),
        )


def server_interactions(statement: dict[str, Any]) -> set[str]:
    """`<Type>.<code>` for every interaction of the statement's server-mode rest entries."""
    found: set[str] = set()
    for rest in _dicts(statement.get("rest")):
        if rest.get("mode") != "server":
            continue
        for resource in _dicts(rest.get("resource")):
            if not isinstance(resource.get("type"), str):
                continue
            for interaction in _dicts(resource.get("interaction")):
                if isinstance(interaction.get("code"), str):
                    found.add(f"{resource['type']}.{interaction['code']}")
    return found


def scope_offered(scopes: tuple[str, ...], wanted: str) -> bool:
    """True when a listed scope grants `wanted` (`user/Appointment.read`, `launch`, ...)."""
    if "/" not in wanted or wanted.startswith("launch/"):
        return wanted in scopes
    level, rest = wanted.split("/", 1)
    resource_type, interaction = rest.split(".", 1)
    v1, v2 = _SCOPE_LETTERS[interaction]
    for item in scopes:
        match = _RESOURCE_SCOPE.match(item)
        if not match or match.group(3) == "":
            continue
        item_level, item_type, permission, _ = match.groups()
        if item_level != level or item_type not in ("*", resource_type):
            continue
        if permission in ("*", v1) or (permission not in ("read", "write") and v2 in permission):
            return True
    return False


def requirement_status(requirement: Requirement, offer: ServerOffer) -> str:
    statuses = [_one_status(requirement.kind, requirement.value, offer)] + [
        _one_status(kind, value, offer) for kind, value in requirement.alternatives
    ]
    if MET in statuses:
        return MET
    return UNCONFIRMED if UNCONFIRMED in statuses else MISSING


def _one_status(kind: str, value: str, offer: ServerOffer) -> str:
    if kind == "capability":
        return MET if value in offer.capabilities else MISSING
    if kind == "interaction":
        return MET if value in offer.interactions else MISSING
    if kind == "auth_method":
        return _listed(value, offer.auth_methods)
    if kind == "grant_type":
        return _listed(value, offer.grant_types)
    if kind == "scope":
        if offer.scopes is None:
            return UNCONFIRMED
        # A scope not listed may still be granted: the list need not be exhaustive.
        return MET if scope_offered(offer.scopes, value) else UNCONFIRMED
    raise ValueError(f"unknown requirement kind {kind}")


def _listed(value: str, listed: frozenset[str] | None) -> str:
    if listed is None:
        return UNCONFIRMED
    return MET if value in listed else MISSING


# --- The verdict ---------------------------------------------------------------------------------


def features_evaluate(offer: ServerOffer) -> list[dict[str, Any]]:
    """One entry per feature: key, title, core, status (available, lost, unconfirmed), and the
    requirements missing or unconfirmed, in words."""
    results = []
    for feature in FEATURES:
        missing: list[str] = []
        unconfirmed: list[str] = []
        for requirement in feature.requires:
            status = requirement_status(requirement, offer)
            if status == MISSING:
                missing.append(requirement.describe())
            elif status == UNCONFIRMED:
                unconfirmed.append(requirement.describe())
        results.append(
            {
                "key": feature.key,
                "title": feature.title,
                "core": feature.core,
                "status": "lost" if missing else ("unconfirmed" if unconfirmed else "available"),
                "missing": missing,
                "unconfirmed": unconfirmed,
            }
        )
    return results


def gaps_summary(features: list[dict[str, Any]]) -> str:
    """The features lost or unconfirmed, each with what it lacks, in one paragraph.

    A core feature is never "lost" here: the validation fails before that.
    """
    sentences = []
    for feature in features:
        if feature["status"] == "lost" and not feature["core"]:
            sentences.append(
                f"Lost: {feature['title']} — the server does not offer {_join(feature['missing'])}."
            )
        elif feature["status"] == "unconfirmed":
            sentences.append(
                f"To confirm with your EHR team: {feature['title']} — the server does not say it offers "
                f"{_join(feature['unconfirmed'])}."
            )
    return " ".join(sentences)


# --- Small readers for untrusted JSON ------------------------------------------------------------


def _strings(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(item for item in value if isinstance(item, str))


def _frozen(value: tuple[str, ...] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
