"""Read paths of the sandbox EHR: FHIR reads and searches, the users who can sign in, launches."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.utils import timezone

from connector.sandbox_ehr.models import AccessToken, Launch, Resource
from connector.sandbox_ehr.seed import CONFERENCE_SYSTEM, CSN_SYSTEM, DEPARTMENT_SYSTEM, USERNAME_SYSTEM


def secret_hash(raw: str) -> str:
    """Codes and tokens are stored as SHA-256 hashes: a database dump issues nothing."""
    return hashlib.sha256(raw.encode()).hexdigest()


def resource_get(*, server: str, resource_type: str, fhir_id: str) -> Resource | None:
    return Resource.objects.filter(server=server, resource_type=resource_type, fhir_id=fhir_id).first()


def served_body(resource: Resource) -> dict:
    """The resource as the server answers it: its body with id and meta."""
    meta = {"versionId": str(resource.version), "lastUpdated": resource.updated_at.isoformat()}
    return {**resource.body, "id": resource.fhir_id, "meta": meta}


def identifier_value(body: dict, system: str) -> str:
    return next((i.get("value", "") for i in body.get("identifier", []) if i.get("system") == system), "")


def display_name(body: dict) -> str:
    name = (body.get("name") or [{}])[0]
    text = " ".join([*name.get("given", []), name.get("family", "")]).strip()
    suffix = ", ".join(name.get("suffix", []))
    return f"{text}, {suffix}" if suffix else text


# --- search -----------------------------------------------------------------------------------------

# The reference each resource type is searched by with `patient=`.
_PATIENT_PATHS = {
    "Appointment": lambda body: [
        p.get("actor", {}).get("reference", "") for p in body.get("participant", [])
    ],
    "Encounter": lambda body: [body.get("subject", {}).get("reference", "")],
}
# The references each resource type is searched by with `practitioner=`.
_PRACTITIONER_PATHS = {
    "Appointment": lambda body: [
        p.get("actor", {}).get("reference", "") for p in body.get("participant", [])
    ],
    "Encounter": lambda body: [
        p.get("individual", {}).get("reference", "") for p in body.get("participant", [])
    ],
}
# The instant each resource type is searched by with `date=`.
_DATE_PATHS = {
    "Appointment": lambda body: body.get("start"),
    "Encounter": lambda body: body.get("period", {}).get("start"),
}
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")


def _matches_identifier(body: dict, token: str) -> bool:
    system, _, value = token.rpartition("|") if "|" in token else (None, "", token)
    for identifier in body.get("identifier", []):
        if identifier.get("value") == value and (system is None or identifier.get("system", "") == system):
            return True
    return False


def _date_range(value: str) -> tuple[datetime, datetime]:
    """The instants a FHIR date search value covers: a whole day for a date, one instant otherwise."""
    if len(value) == 10:
        start = datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        return start, start + timedelta(days=1)
    moment = datetime.fromisoformat(value)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment, moment + timedelta(microseconds=1)


def _matches_date(instant: str | None, param: str) -> bool:
    if not instant:
        return False
    prefix, value = (param[:2], param[2:]) if param[:2] in _PREFIXES else ("eq", param)
    low, high = _date_range(value)
    moment = datetime.fromisoformat(instant)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return {
        "eq": low <= moment < high,
        "ne": not (low <= moment < high),
        "gt": moment >= high,
        "ge": moment >= low,
        "lt": moment < low,
        "le": moment < high,
    }[prefix]


def resource_search(*, server: str, resource_type: str, params: dict[str, list[str]]) -> list[Resource]:
    """Search one type by `_id`, `identifier`, `patient`, `practitioner` and `date` (repeated parameters are ANDed,
    comma-separated values ORed). Other parameters are ignored, as FHIR's lenient handling allows.

    Raises ValueError for a malformed date.
    """
    rows = Resource.objects.filter(server=server, resource_type=resource_type).order_by("fhir_id")
    for value in params.get("_id", []):
        rows = rows.filter(fhir_id__in=value.split(","))
    found = list(rows)
    for value in params.get("identifier", []):
        found = [r for r in found if any(_matches_identifier(r.body, t) for t in value.split(","))]
    if resource_type in _PATIENT_PATHS:
        for value in params.get("patient", []):
            wanted = {v if "/" in v else f"Patient/{v}" for v in value.split(",")}
            found = [r for r in found if wanted & set(_PATIENT_PATHS[resource_type](r.body))]
    if resource_type in _PRACTITIONER_PATHS:
        for value in params.get("practitioner", []):
            wanted = {v if "/" in v else f"Practitioner/{v}" for v in value.split(",")}
            found = [r for r in found if wanted & set(_PRACTITIONER_PATHS[resource_type](r.body))]
    if resource_type in _DATE_PATHS:
        for value in params.get("date", []):
            found = [r for r in found if _matches_date(_DATE_PATHS[resource_type](r.body), value)]
    return found


# --- users and launches -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInUser:
    """Someone who can sign in to the sandbox EHR: a Practitioner (staff) or a Patient (portal)."""

    resource_type: str
    fhir_id: str
    username: str
    name: str
    kind: str  # clinician (a Practitioner with a qualification), staff (EHR analysts) or patient

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.fhir_id}"


def _sign_in_user(row: Resource) -> SignInUser:
    kinds = {"Patient": "patient", "Practitioner": "clinician" if row.body.get("qualification") else "staff"}
    kind = kinds[row.resource_type]
    username = identifier_value(row.body, USERNAME_SYSTEM)
    return SignInUser(row.resource_type, row.fhir_id, username, display_name(row.body), kind)


def users_for_sign_in(*, server: str, resource_type: str) -> list[SignInUser]:
    """Practitioners (clinicians first) or Patients, for the sign-in page."""
    rows = Resource.objects.filter(server=server, resource_type=resource_type)
    return sorted((_sign_in_user(r) for r in rows), key=lambda u: (u.kind != "clinician", u.username))


def user_get(*, server: str, reference: str) -> SignInUser | None:
    resource_type, _, fhir_id = reference.partition("/")
    if resource_type not in ("Practitioner", "Patient"):
        return None
    row = resource_get(server=server, resource_type=resource_type, fhir_id=fhir_id)
    return _sign_in_user(row) if row else None


def launch_get_valid(launch_id: str) -> Launch | None:
    return Launch.objects.filter(launch_id=launch_id, expires_at__gt=timezone.now()).first()


def access_token_get_valid(*, raw: str, server: str) -> AccessToken | None:
    """The live token with this value that may be used on `server` (backend tokens fit every server)."""
    token = AccessToken.objects.filter(
        token_hash=secret_hash(raw), revoked=False, expires_at__gt=timezone.now()
    ).first()
    if token is None or token.server not in ("", server):
        return None
    return token


@dataclass(frozen=True)
class HomeAppointment:
    fhir_id: str
    start: datetime
    patient: str
    clinician: str
    department: str
    department_id: str
    csn: str
    conference_id: str


def appointments_for_home(*, server: str) -> list[HomeAppointment]:
    """The appointments listed on the sandbox home page, soonest first."""
    rows = Resource.objects.filter(server=server, resource_type="Appointment")
    locations = {
        f"Location/{r.fhir_id}": r.body
        for r in Resource.objects.filter(server=server, resource_type="Location")
    }
    listed = []
    for row in rows:
        actors = [p.get("actor", {}) for p in row.body.get("participant", [])]

        def actor(kind: str, actors: list = actors) -> dict:
            return next((a for a in actors if a.get("reference", "").startswith(f"{kind}/")), {})

        location = locations.get(actor("Location").get("reference", ""), {})
        listed.append(
            HomeAppointment(
                fhir_id=row.fhir_id,
                start=datetime.fromisoformat(row.body["start"]),
                patient=actor("Patient").get("display", ""),
                clinician=actor("Practitioner").get("display", ""),
                department=location.get("name", ""),
                department_id=identifier_value(location, DEPARTMENT_SYSTEM),
                csn=identifier_value(row.body, CSN_SYSTEM),
                conference_id=identifier_value(row.body, CONFERENCE_SYSTEM),
            )
        )
    return sorted(listed, key=lambda a: a.start)
