"""Finding a launch's appointment and reading its schedule, as a real EHR integration must.

Most EHRs send `patient`, `encounter` and `fhirUser` with a launch and nothing
about the appointment; what the connector needs beyond that it reads from FHIR
with the launch's own access token. The order (docs/visits.md, "How the
connector finds the appointment"):

1. SMART 2 `fhirContext`: an Appointment (read it), or an Encounter (step 3).
2. Vendor context: what the EHR adds to the token response (Epic: `appointment`,
   `csn`) and the launch parameters the integration records tell the EHR team to
   append to the launch URL (`appointment` / `csn`, carried in the launch state):
   an Appointment search by identifier.
3. The launch's encounter: read it, then the Appointment in `Encounter.appointment`.
4. An Appointment search by patient (and practitioner, for clinicians) around now.
5. No appointment anywhere: an unscheduled visit keyed to the encounter.

Before any read, every ID the launch already carries is looked up among the
visits' keys (connector.models.VisitKey): a relaunch of a known visit costs no
FHIR request at all. At most MAX_FHIR_READS requests are made per launch.

Only times and identifiers are kept (start, end, status, participant count,
location reference): never names or clinical data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from connector.ehr_http import EhrHttpError, ehr_get_json
from connector.models import AppointmentSource, FhirEndpoint, ParticipantRole, Visit, VisitKey

logger = logging.getLogger(__name__)

# A launch never makes more FHIR requests than this (the usual paths make one or two).
MAX_FHIR_READS = 3
# "Around now" for the Appointment search: appointments starting this close to the launch.
SEARCH_WINDOW = timedelta(hours=12)
# Appointments in these states are not the one being started.
CLOSED_STATUSES = frozenset({"cancelled", "entered-in-error", "noshow"})
# Names of the launch URL parameters the integration records list (connector/services/records.py).
APPOINTMENT_PARAMETERS = ("appointment", "csn")


@dataclass(frozen=True)
class Schedule:
    """What is kept of the EHR's appointment (or encounter): times and identifiers only."""

    start: datetime | None = None
    end: datetime | None = None
    status: str = ""
    participant_count: int | None = None
    location_reference: str = ""


@dataclass
class FoundAppointment:
    """The outcome of the search: the visit it leads to, or what to make one from."""

    found_by: str
    appointment_id: str  # Visit.appointment_id for a new visit
    fhir_appointment_id: str = ""
    encounter_id: str = ""
    keys: list[str] = field(default_factory=list)
    schedule: Schedule | None = None
    visit: Visit | None = None  # already known (a relaunch): nothing was read
    fhir_requests: int = 0
    notes: list[str] = field(default_factory=list)  # reads that failed, for administrators


class AppointmentNotFound(Exception):
    """Neither an appointment nor an encounter: nothing to key a visit to."""

    def __init__(self, notes: list[str]) -> None:
        super().__init__("no appointment and no encounter")
        self.notes = notes


def _id_of(reference: str, resource_type: str) -> str:
    """`Appointment/123`, `https://ehr/fhir/Appointment/123` or `Appointment/123/_history/2` -> `123`."""
    parts = [p for p in (reference or "").split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == resource_type:
        return parts[-1]
    return ""


def _parse_instant(value: object) -> datetime | None:
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = parse_datetime(value)
    except ValueError:
        return None
    if moment is None or timezone.is_naive(moment):
        return None
    return moment


def identifier_values(resource: dict) -> list[str]:
    values = []
    for identifier in resource.get("identifier") or []:
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if isinstance(value, str) and value.strip():
            values.append(value.strip()[:250])
    return values


def appointment_keys(appointment: dict) -> list[str]:
    """The keys a FHIR Appointment is known by: its id and every identifier value."""
    keys = [f"Appointment/{appointment['id']}"] if appointment.get("id") else []
    return keys + [f"id:{value}" for value in identifier_values(appointment)]


def schedule_from_appointment(appointment: dict) -> Schedule:
    participants = [p for p in appointment.get("participant") or [] if isinstance(p, dict)]
    location = next(
        (
            p["actor"]["reference"]
            for p in participants
            if isinstance(p.get("actor"), dict) and _id_of(p["actor"].get("reference", ""), "Location")
        ),
        "",
    )
    return Schedule(
        start=_parse_instant(appointment.get("start")),
        end=_parse_instant(appointment.get("end")),
        status=str(appointment.get("status") or "")[:20],
        participant_count=len(participants),
        location_reference=f"Location/{_id_of(location, 'Location')}" if location else "",
    )


def schedule_from_encounter(encounter: dict) -> Schedule:
    period = encounter.get("period") if isinstance(encounter.get("period"), dict) else {}
    locations = [item for item in encounter.get("location") or [] if isinstance(item, dict)]
    location = next(
        (
            _id_of(item.get("location", {}).get("reference", ""), "Location")
            for item in locations
            if isinstance(item.get("location"), dict)
        ),
        "",
    )
    return Schedule(
        start=_parse_instant(period.get("start")),
        end=_parse_instant(period.get("end")),
        participant_count=len(encounter.get("participant") or []) + (1 if encounter.get("subject") else 0),
        location_reference=f"Location/{location}" if location else "",
    )


def merge_schedules(appointment: Schedule, encounter: Schedule | None) -> Schedule:
    """The appointment's schedule, with the encounter filling what it lacks (times, location)."""
    if encounter is None:
        return appointment
    return Schedule(
        start=appointment.start or encounter.start,
        end=appointment.end or encounter.end,
        status=appointment.status,
        participant_count=appointment.participant_count,
        location_reference=appointment.location_reference or encounter.location_reference,
    )


class FhirReader:
    """Reads with the launch's access token, counting requests and keeping failures as notes."""

    def __init__(self, *, base_url: str, access_token: str, notes: list[str]) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {access_token}"}
        self.requests = 0
        self.notes = notes

    @property
    def spent(self) -> bool:
        return self.requests >= MAX_FHIR_READS

    def _get(self, path: str, what: str) -> dict | None:
        if self.spent:
            self.notes.append(f"{what}: not tried, the launch already made {MAX_FHIR_READS} FHIR requests")
            return None
        self.requests += 1
        try:
            return ehr_get_json(f"{self.base_url}/{path}", headers=self.headers).json
        except EhrHttpError as error:
            self.notes.append(f"{what}: {error.message}")
            return None

    def read(self, resource_type: str, fhir_id: str) -> dict | None:
        body = self._get(f"{resource_type}/{fhir_id}", f"reading {resource_type}")
        if body is None:
            return None
        if body.get("resourceType") != resource_type or not body.get("id"):
            self.notes.append(f"reading {resource_type}: the EHR answered with something else")
            return None
        return body

    def search(self, resource_type: str, params: list[tuple[str, str]], what: str) -> list[dict]:
        body = self._get(f"{resource_type}?{urlencode(params)}", what)
        if body is None:
            return []
        return [
            entry["resource"]
            for entry in body.get("entry") or []
            if isinstance(entry, dict)
            and isinstance(entry.get("resource"), dict)
            and entry["resource"].get("resourceType") == resource_type
            and entry["resource"].get("id")
        ]


@dataclass(frozen=True)
class LaunchFacts:
    """What the launch itself says, before any FHIR read."""

    role: str
    patient_id: str = ""
    encounter_id: str = ""
    fhir_user: str = ""
    context_appointment_id: str = ""  # fhirContext Appointment
    context_encounter_id: str = ""  # fhirContext Encounter
    vendor_values: tuple[str, ...] = ()  # token extras and launch URL parameters (Epic CSN, ...)
    trusted_vendor_values: tuple[str, ...] = ()  # of those, the ones the EHR itself sent (token)


def launch_facts(*, token: dict, role: str, fhir_user: str, launch_parameters: dict) -> LaunchFacts:
    """Read a token response and the launch URL's parameters into LaunchFacts."""
    context_appointment = context_encounter = ""
    for item in token.get("fhirContext") or []:
        reference = item.get("reference", "") if isinstance(item, dict) else ""
        if isinstance(item, str):
            reference = item
        context_appointment = context_appointment or _id_of(reference, "Appointment")
        context_encounter = context_encounter or _id_of(reference, "Encounter")
    from_token = tuple(
        str(token[name]).strip()[:200]
        for name in APPOINTMENT_PARAMETERS
        if isinstance(token.get(name), (str, int)) and str(token[name]).strip()
    )
    from_url = tuple(
        str(launch_parameters[name]).strip()[:200]
        for name in APPOINTMENT_PARAMETERS
        if str(launch_parameters.get(name) or "").strip()
    )
    encounter = str(token.get("encounter") or "")
    return LaunchFacts(
        role=role,
        patient_id=_id_of(f"Patient/{token.get('patient') or ''}", "Patient") if token.get("patient") else "",
        encounter_id=_id_of(encounter, "Encounter") or _id_of(f"Encounter/{encounter}", "Encounter"),
        fhir_user=fhir_user,
        context_appointment_id=context_appointment,
        context_encounter_id=context_encounter,
        vendor_values=tuple(dict.fromkeys(from_token + from_url)),
        trusted_vendor_values=from_token,
    )


def _known_keys(facts: LaunchFacts) -> list[str]:
    """Keys looked up before any read, in the documented order.

    A patient's launch URL parameters are not trusted on their own (a patient could edit the
    URL): they lead to a visit only through FHIR, where the appointment must be the patient's.
    """
    keys = []
    if facts.context_appointment_id:
        keys.append(f"Appointment/{facts.context_appointment_id}")
    vendor = facts.vendor_values if facts.role == ParticipantRole.CLINICIAN else facts.trusted_vendor_values
    keys += [f"id:{value}" for value in vendor]
    for encounter in (facts.context_encounter_id, facts.encounter_id):
        if encounter:
            keys.append(f"Encounter/{encounter}")
    return list(dict.fromkeys(keys))


def visit_for_keys(*, endpoint: FhirEndpoint, keys: list[str]) -> Visit | None:
    """The visit known by the first of `keys` that one is known by, in this organization and environment."""
    if not keys:
        return None
    rows = dict(
        VisitKey.objects.filter(
            tenant=endpoint.tenant_id, environment=endpoint.environment, key__in=keys
        ).values_list("key", "visit_id")
    )
    for key in keys:
        if key in rows:
            return Visit.objects.select_related("endpoint", "tenant").get(pk=rows[key])
    # Visits made before keys existed are known by their appointment ID only.
    plain = [key.partition(":")[2] for key in keys if key.startswith("id:")]
    plain += [key.partition("/")[2] for key in keys if key.startswith("Appointment/")]
    if plain:
        return (
            Visit.objects.select_related("endpoint", "tenant")
            .filter(endpoint=endpoint, appointment_id__in=plain)
            .order_by("pk")
            .first()
        )
    return None


def _is_patients(appointment: dict, patient_id: str) -> bool:
    return any(
        _id_of((p.get("actor") or {}).get("reference", ""), "Patient") == patient_id
        for p in appointment.get("participant") or []
        if isinstance(p, dict)
    )


def _closest_to_now(appointments: list[dict]) -> dict | None:
    now = timezone.now()
    open_ones = [
        (abs((start - now).total_seconds()), a)
        for a in appointments
        if a.get("status") not in CLOSED_STATUSES and (start := _parse_instant(a.get("start")))
    ]
    return min(open_ones, key=lambda pair: pair[0])[1] if open_ones else None


def appointment_find(*, endpoint: FhirEndpoint, facts: LaunchFacts, access_token: str) -> FoundAppointment:
    """Follow the documented order until an appointment (or at least an encounter) is found.

    Raises AppointmentNotFound when the launch has neither.
    """
    notes: list[str] = []
    known = visit_for_keys(endpoint=endpoint, keys=_known_keys(facts))
    if known is not None and (known.found_by or known.schedule_read_at or known.scheduled_start):
        return FoundAppointment(
            found_by=known.found_by, appointment_id=known.appointment_id, visit=known, keys=_known_keys(facts)
        )
    reader = FhirReader(base_url=endpoint.base_url, access_token=access_token, notes=notes)
    encounter_keys = [f"Encounter/{e}" for e in (facts.context_encounter_id, facts.encounter_id) if e]

    def found(how: str, appointment: dict, encounter: dict | None = None) -> FoundAppointment:
        encounter_id = (encounter or {}).get("id") or facts.context_encounter_id or facts.encounter_id
        keys = appointment_keys(appointment) + [f"Encounter/{encounter_id}"] * bool(encounter_id)
        schedule = merge_schedules(
            schedule_from_appointment(appointment), schedule_from_encounter(encounter) if encounter else None
        )
        return FoundAppointment(
            found_by=how,
            appointment_id=appointment["id"],
            fhir_appointment_id=appointment["id"],
            encounter_id=encounter_id,
            keys=list(dict.fromkeys(keys)),
            schedule=schedule,
            fhir_requests=reader.requests,
            notes=notes,
        )

    def acceptable(appointment: dict | None) -> bool:
        # A patient only ever reaches their own appointment.
        if appointment is None:
            return False
        if (
            facts.role != ParticipantRole.CLINICIAN
            and facts.patient_id
            and not _is_patients(appointment, facts.patient_id)
        ):
            notes.append("the appointment found is not this patient's: ignored")
            return False
        return True

    # 1. fhirContext: an Appointment.
    if facts.context_appointment_id:
        appointment = reader.read("Appointment", facts.context_appointment_id)
        if acceptable(appointment):
            return found(AppointmentSource.FHIR_CONTEXT, appointment)
    # 2. Vendor context (Epic CSN and the like): an Appointment with that identifier.
    for value in facts.vendor_values:
        matches = reader.search("Appointment", [("identifier", value)], "searching Appointment by identifier")
        appointment = next((a for a in matches if acceptable(a)), None)
        if appointment is not None:
            return found(AppointmentSource.LAUNCH_PARAMETER, appointment)
        if reader.spent:
            break
    # 3. The encounter, then its appointment.
    encounter = None
    for encounter_id in dict.fromkeys(e for e in (facts.context_encounter_id, facts.encounter_id) if e):
        encounter = reader.read("Encounter", encounter_id)
        if encounter is None:
            continue
        for item in encounter.get("appointment") or []:
            appointment_id = _id_of((item or {}).get("reference", ""), "Appointment")
            if appointment_id:
                appointment = reader.read("Appointment", appointment_id)
                if acceptable(appointment):
                    how = (
                        AppointmentSource.FHIR_CONTEXT
                        if facts.context_encounter_id
                        else AppointmentSource.ENCOUNTER
                    )
                    return found(how, appointment, encounter)
                break
        break
    # 4. A search by patient (and practitioner) around now.
    if facts.patient_id and not reader.spent:
        now = timezone.now()
        params = [
            ("patient", facts.patient_id),
            ("date", f"ge{(now - SEARCH_WINDOW).isoformat(timespec='seconds')}"),
            ("date", f"le{(now + SEARCH_WINDOW).isoformat(timespec='seconds')}"),
        ]
        practitioner = _id_of(facts.fhir_user, "Practitioner")
        if facts.role == ParticipantRole.CLINICIAN and practitioner:
            params.insert(1, ("practitioner", practitioner))
        appointment = _closest_to_now(
            [
                a
                for a in reader.search("Appointment", params, "searching Appointment around now")
                if acceptable(a)
            ]
        )
        if appointment is not None:
            return found(AppointmentSource.SEARCH, appointment, encounter)
    # 5. Nothing: a visit keyed to the encounter.
    encounter_id = (encounter or {}).get("id") or facts.context_encounter_id or facts.encounter_id
    if not encounter_id:
        raise AppointmentNotFound(notes)
    return FoundAppointment(
        found_by=AppointmentSource.UNSCHEDULED,
        appointment_id=f"encounter:{encounter_id}"[:200],
        encounter_id=encounter_id,
        keys=list(dict.fromkeys(encounter_keys or [f"Encounter/{encounter_id}"])),
        schedule=schedule_from_encounter(encounter) if encounter else None,
        fhir_requests=reader.requests,
        notes=notes,
    )
