"""SMART scopes, v1 (`user/Encounter.write`) and v2 (`user/Encounter.rs`), checked per interaction."""

from __future__ import annotations

import re

_RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)(\?.*)?$")

# Which v1 and v2 permissions allow each FHIR interaction.
_NEEDS = {
    "read": ("read", "r"),
    "search": ("read", "s"),
    "update": ("write", "u"),
    "create": ("write", "c"),
}


def scope_allows(scope: str, resource_type: str, interaction: str) -> bool:
    """True when one of the space-separated scopes permits `interaction` on `resource_type`."""
    v1, v2 = _NEEDS[interaction]
    for item in scope.split():
        match = _RESOURCE_SCOPE.match(item)
        if not match or match.group(3) == "":
            continue
        _, scoped_type, permission, _ = match.groups()
        if scoped_type not in ("*", resource_type):
            continue
        if permission in ("*", v1) or (permission not in ("read", "write") and v2 in permission):
            return True
    return False


def is_patient_facing(scope: str) -> bool:
    """Scopes a patient (portal user) asks for: patient-level data or a patient picked at launch."""
    return any(item.startswith("patient/") or item == "launch/patient" for item in scope.split())


def is_system_only(scope: str) -> bool:
    items = scope.split()
    return bool(items) and all(item.startswith("system/") for item in items)
