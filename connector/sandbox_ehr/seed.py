"""Made-up demo data for the sandbox EHR: clinicians, EHR analysts, patients, visits.

Every name, number and identifier here is invented. `seed_sandbox_ehr()` loads
the same data into both data servers (`r4` and `r4-other`) and can run again:
it resets the demo rows and moves the appointments to today and tomorrow.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.utils import timezone

from connector.sandbox_ehr.flavors import FLAVORS
from connector.sandbox_ehr.models import Resource

# Identifier systems of the sandbox (EHR user names, MRNs, Epic-style visit numbers).
USERNAME_SYSTEM = "urn:sandbox-ehr:username"
MRN_SYSTEM = "urn:sandbox-ehr:mrn"
CSN_SYSTEM = "urn:sandbox-ehr:csn"
CONFERENCE_SYSTEM = "urn:sandbox-ehr:conference-id"
DEPARTMENT_SYSTEM = "urn:sandbox-ehr:department-id"

# (id, EHR username, given, family, role)
PRACTITIONERS = [
    ("pract-smith", "DRSMITH", "Dana", "Smith", "clinician"),
    ("pract-park", "DRPARK", "Lee", "Park", "clinician"),
    ("pract-nguyen", "DRNGUYEN", "Rae", "Nguyen", "clinician"),
    ("pract-analyst1", "ANALYST1", "Avery", "Analyst", "analyst"),
    ("pract-analyst2", "ANALYST2", "Blake", "Analyst", "analyst"),
]
# (id, portal username, MRN, given, family, birth date, gender)
PATIENTS = [
    ("pat-alex", "PT-ALEX", "SBX-0001", "Alex", "Testpatient", "1980-01-01", "female"),
    ("pat-jordan", "PT-JORDAN", "SBX-0002", "Jordan", "Example", "1975-05-05", "male"),
    ("pat-riley", "PT-RILEY", "SBX-0003", "Riley", "Sample", "2001-11-11", "other"),
]
# (id, department id, name)
DEPARTMENTS = [
    ("loc-101", "DEPT-101", "Family Medicine (virtual)"),
    ("loc-202", "DEPT-202", "Dermatology (virtual)"),
    ("loc-303", "DEPT-303", "Behavioral Health (virtual)"),
]
# (number, days from today, start time UTC, patient, practitioner, location)
APPOINTMENTS = [
    (1001, 0, time(9, 0), "pat-alex", "pract-smith", "loc-101"),
    (1002, 0, time(13, 30), "pat-jordan", "pract-park", "loc-202"),
    (1003, 0, time(16, 0), "pat-riley", "pract-nguyen", "loc-303"),
    (1004, 1, time(10, 0), "pat-jordan", "pract-smith", "loc-101"),
    (1005, 1, time(14, 0), "pat-alex", "pract-park", "loc-202"),
]
VISIT_MINUTES = 30
DATA_SERVERS = [name for name, flavor in FLAVORS.items() if flavor.data]


def _practitioner(pid: str, username: str, given: str, family: str, role: str) -> dict:
    practitioner = {
        "resourceType": "Practitioner",
        "id": pid,
        "identifier": [{"system": USERNAME_SYSTEM, "value": username}],
        "active": True,
        "name": [{"use": "official", "family": family, "given": [given]}],
    }
    if role == "clinician":
        practitioner["name"][0]["suffix"] = ["MD"]
        md = {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0360",
            "code": "MD",
            "display": "Doctor of Medicine",
        }
        practitioner["qualification"] = [{"code": {"coding": [md]}}]
    return practitioner


def _patient(pid: str, username: str, mrn: str, given: str, family: str, birth: str, gender: str) -> dict:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [
            {"system": MRN_SYSTEM, "value": mrn},
            {"system": USERNAME_SYSTEM, "value": username},
        ],
        "active": True,
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth,
    }


def _location(lid: str, department_id: str, name: str) -> dict:
    return {
        "resourceType": "Location",
        "id": lid,
        "identifier": [{"system": DEPARTMENT_SYSTEM, "value": department_id}],
        "status": "active",
        "name": name,
    }


def _reference(resource_type: str, rid: str) -> dict:
    names = {
        **{f"Patient/{r[0]}": f"{r[3]} {r[4]}" for r in PATIENTS},
        **{f"Practitioner/{r[0]}": f"Dr. {r[2]} {r[3]}" for r in PRACTITIONERS},
        **{f"Location/{r[0]}": r[2] for r in DEPARTMENTS},
    }
    reference = f"{resource_type}/{rid}"
    return {"reference": reference, "display": names[reference]}


def _visit(number: int, start: datetime, patient: str, practitioner: str, location: str) -> tuple[dict, dict]:
    end = start + timedelta(minutes=VISIT_MINUTES)
    patient_ref = _reference("Patient", patient)
    practitioner_ref = _reference("Practitioner", practitioner)
    location_ref = _reference("Location", location)
    appointment = {
        "resourceType": "Appointment",
        "id": f"appt-{number}",
        "identifier": [
            {"system": CSN_SYSTEM, "value": str(90000000 + number)},
            {"system": CONFERENCE_SYSTEM, "value": f"CONF-{number}"},
        ],
        "status": "booked",
        "serviceType": [{"text": "Virtual visit"}],
        "description": "Virtual visit (sandbox demo)",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "minutesDuration": VISIT_MINUTES,
        "participant": [
            {"actor": patient_ref, "status": "accepted"},
            {"actor": practitioner_ref, "status": "accepted"},
            {"actor": location_ref, "status": "accepted"},
        ],
    }
    encounter = {
        "resourceType": "Encounter",
        "id": f"enc-{number}",
        "identifier": [{"system": CSN_SYSTEM, "value": str(90000000 + number)}],
        "status": "planned",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "VR",
            "display": "virtual",
        },
        "subject": patient_ref,
        "participant": [{"individual": practitioner_ref}],
        "appointment": [{"reference": f"Appointment/appt-{number}"}],
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "location": [{"location": location_ref}],
    }
    return appointment, encounter


def demo_resources(today: date) -> list[dict]:
    """Every demo resource, with the appointments placed on `today` and the day after."""
    resources = [_practitioner(*row) for row in PRACTITIONERS]
    resources += [_patient(*row) for row in PATIENTS]
    resources += [_location(*row) for row in DEPARTMENTS]
    for number, days, at, patient, practitioner, location in APPOINTMENTS:
        start = datetime.combine(today + timedelta(days=days), at, tzinfo=UTC)
        resources += _visit(number, start, patient, practitioner, location)
    return resources


@transaction.atomic
def seed_sandbox_ehr() -> int:
    """Create or reset the demo data on every data server; returns the number of resources written."""
    resources = demo_resources(timezone.now().date())
    for server in DATA_SERVERS:
        for body in resources:
            Resource.objects.update_or_create(
                server=server,
                resource_type=body["resourceType"],
                fhir_id=body["id"],
                defaults={"body": body, "version": 1},
            )
    return len(resources) * len(DATA_SERVERS)
