"""Sending EHR write-backs as standard FHIR through SMART Backend Services.

- Encounter: status `in-progress` with `period.start` when the visit starts,
  `finished` with `period.end` when it ends (read, change, update with If-Match).
- Communication: one for each participant connect and disconnect and each
  device test result, with the Encounter's `subject` and the `encounter`, naming
  only the role. Created idempotently: an identifier and `If-None-Exist` on it,
  so a retry after a lost answer finds the first one instead of making a second.
- Appointment: its `status` (`arrived`, `fulfilled`, `noshow`), only forward
  (a late `arrived` never undoes `fulfilled`; a cancelled appointment is left alone).
- The join link, when the endpoint asks for it: Oracle Health takes its
  documented JSON Patch of the video visit links (`/contained/0/address` the
  provider's, `/contained/1/address` the patient's, `add` the first time and
  `replace` after); any other EHR gets the R5 cross-version extension
  `virtualService` on the R4 Appointment.

A failure keeps what the EHR said (OAuth `error_description`, OperationOutcome
text) in the row's error, shown to the organization's administrators in the
portal (connector/portal/write_backs.py) and in /admin/.

Authentication: client credentials with a private_key_jwt assertion (RS384),
the token cached until shortly before it expires. Temporary failures retry with
exponential backoff (a schedule picks up rows that are due); permanent ones stop
and show in the admin with their error.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urlencode

from django.core.cache import cache
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from connector.ehr_http import EhrHttpError, ehr_post_form, ehr_request_json
from connector.models import FhirEndpoint, ParticipantRole, WriteBack, WriteBackState
from connector.services.launch import LaunchError, smart_configuration_for
from connector.signing_keys import client_authentication
from tenants.models import EhrVendor

logger = logging.getLogger(__name__)

BACKEND_SCOPES = (
    "system/Encounter.read system/Encounter.write system/Communication.write "
    "system/Appointment.read system/Appointment.write"
)
MAX_ATTEMPTS = 8
FIRST_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=1)
# Retrying may help: a timeout, "too early", rate limiting, a version conflict (read again).
TEMPORARY_STATUSES = frozenset({408, 409, 412, 423, 425, 429})
# Appointment statuses in the order a visit moves through them; a write never goes back.
_APPOINTMENT_ORDER = {
    "proposed": 0,
    "pending": 0,
    "booked": 0,
    "waitlist": 0,
    "arrived": 1,
    "checked-in": 2,
    "fulfilled": 3,
}
VIRTUAL_SERVICE_URL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"
# A worker killed mid-send leaves its row "sending"; after this lease it is tried again.
SENDING_LEASE = timedelta(minutes=10)


class WriteBackFailed(Exception):
    def __init__(self, message: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status


def backend_services_token(endpoint: FhirEndpoint) -> str:
    key = f"backend-token:{endpoint.pk}:{endpoint.config_version}"
    token = cache.get(key)
    if token:
        return token
    try:
        configuration = smart_configuration_for(endpoint)
    except LaunchError as error:
        raise WriteBackFailed(error.detail or error.message, permanent=False) from error
    token_endpoint = configuration["token_endpoint"]
    try:
        response = ehr_post_form(
            token_endpoint,
            {
                "grant_type": "client_credentials",
                "scope": BACKEND_SCOPES,
                **client_authentication(client_id=endpoint.client_id, token_endpoint=token_endpoint),
            },
            raise_for_status=False,
        )
    except EhrHttpError as error:
        raise WriteBackFailed(
            f"The EHR's token endpoint failed: {error.message}", permanent=error.permanent
        ) from error
    body = response.json if isinstance(response.json, dict) else {}
    if response.status != 200 or "access_token" not in body:
        said = ehr_said(body) or f"HTTP {response.status}"
        raise WriteBackFailed(
            f"The EHR refused backend access ({said}): register the connector for "
            "SMART Backend Services with its JWKS URL and these scopes: " + BACKEND_SCOPES,
            permanent=response.status in (400, 401, 403),
        )
    lifetime = int(body.get("expires_in", 300))
    cache.set(key, body["access_token"], max(lifetime - 60, 30))
    return body["access_token"]


def ehr_said(body: object) -> str:
    """The EHR's own words about a failure: OAuth `error`/`error_description` or OperationOutcome text."""
    if not isinstance(body, dict):
        return ""
    if body.get("resourceType") == "OperationOutcome":
        texts = []
        for issue in body.get("issue") or []:
            if not isinstance(issue, dict):
                continue
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
            where = ", ".join(str(e) for e in issue.get("expression") or issue.get("location") or [])
            if text:
                texts.append(f"{text} ({where})" if where else str(text))
        return "; ".join(texts)[:800]
    error = body.get("error")
    if isinstance(error, str):
        description = body.get("error_description")
        return f"{error}: {description}"[:800] if isinstance(description, str) else error[:800]
    return ""


def _call(
    endpoint: FhirEndpoint,
    method: str,
    path: str,
    body: object = None,
    headers: dict | None = None,
    *,
    content_type: str | None = None,
):
    token = backend_services_token(endpoint)
    request_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
    if content_type:
        request_headers["Content-Type"] = content_type
    resource = path.split("/")[0].split("?")[0]
    try:
        response = ehr_request_json(
            method,
            f"{endpoint.base_url}/{path}",
            json_body=body,
            headers=request_headers,
            raise_for_status=False,
        )
    except EhrHttpError as error:
        raise WriteBackFailed(
            f"{method} {resource} failed: {error.message}", permanent=error.permanent
        ) from error
    if 200 <= response.status < 300:
        return response
    if response.status == 401:
        cache.delete(f"backend-token:{endpoint.pk}:{endpoint.config_version}")
    said = ehr_said(response.json)
    message = f"{method} {resource} failed: the EHR answered HTTP {response.status}"
    raise WriteBackFailed(
        f"{message}: {said}" if said else message,
        permanent=400 <= response.status < 500 and response.status not in TEMPORARY_STATUSES,
        status=response.status,
    )


_ENCOUNTER_CLOSED = {"finished", "cancelled", "entered-in-error"}


def _update_encounter(
    write: WriteBack, *, status: str, start: str | None = None, end: str | None = None
) -> None:
    visit = write.visit
    path = f"Encounter/{visit.encounter_id}"
    encounter, headers = _read_for_update(visit.endpoint, path)
    # Writes of one visit may be sent in any order (retries, several workers): a late
    # "in-progress" never reopens an Encounter that is already finished (or closed in the EHR).
    if status == "in-progress" and encounter.get("status") in _ENCOUNTER_CLOSED:
        status = encounter["status"]
    encounter["status"] = status
    period = dict(encounter.get("period") or {})
    if start:
        period["start"] = start
    if end:
        period["end"] = end
    encounter["period"] = period
    _call(visit.endpoint, "PUT", path, encounter, headers)


_TEXT = {
    WriteBack.Kind.PARTICIPANT_CONNECTED: "{role} connected to the virtual visit",
    WriteBack.Kind.PARTICIPANT_DISCONNECTED: "{role} disconnected from the virtual visit",
    WriteBack.Kind.DEVICE_TEST: "{role} device test: {result}",
}


IDENTIFIER_SYSTEM = "urn:open-ehr-connector:event"


def _subject(write: WriteBack) -> dict | None:
    """The Encounter's subject (a Patient reference), read once per visit and kept for an hour."""
    visit = write.visit
    key = f"write-back-subject:{visit.pk}:{visit.encounter_id}"
    subject = cache.get(key)
    if subject is None:
        encounter = _call(visit.endpoint, "GET", f"Encounter/{visit.encounter_id}").json
        reference = (encounter.get("subject") or {}).get("reference", "")
        subject = _relative(reference)
        cache.set(key, subject, 3600)
    return {"reference": subject} if subject else None


def _relative(reference: str) -> str:
    """`Patient/p1` from an absolute reference too (servers behind proxies rewrite them)."""
    parts = [p for p in reference.split("/") if p]
    return "/".join(parts[-2:]) if len(parts) >= 2 else ""


def _communication(write: WriteBack) -> None:
    visit = write.visit
    payload = write.payload
    result = ", ".join(f"{k} {v}" for k, v in sorted((payload.get("result") or {}).items()))
    text = _TEXT[write.kind].format(role=str(payload.get("role", "participant")).capitalize(), result=result)
    body = {
        "resourceType": "Communication",
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": write.dedupe_key}],
        "status": "completed",
        "category": [{"text": "virtual-visit"}],
        "encounter": {"reference": f"Encounter/{visit.encounter_id}"},
        "sent": payload["occurred_at"],
        "payload": [{"contentString": text}],
    }
    subject = _subject(write)
    if subject:
        body["subject"] = subject
    # Conditional create: a retry after a lost answer finds the first Communication.
    condition = urlencode({"identifier": f"{IDENTIFIER_SYSTEM}|{write.dedupe_key}"})
    _call(visit.endpoint, "POST", "Communication", body, {"If-None-Exist": condition})


def _read_for_update(endpoint: FhirEndpoint, path: str) -> tuple[dict, dict | None]:
    current = _call(endpoint, "GET", path)
    resource = dict(current.json)
    version = (resource.get("meta") or {}).get("versionId")
    return resource, ({"If-Match": f'W/"{version}"'} if version else None)


def _appointment_status(write: WriteBack) -> None:
    visit = write.visit
    wanted = write.payload["status"]
    path = f"Appointment/{visit.fhir_appointment_id}"
    appointment, if_match = _read_for_update(visit.endpoint, path)
    current = appointment.get("status", "")
    if current == wanted:
        return
    if wanted == "noshow":
        allowed = _APPOINTMENT_ORDER.get(current) == 0
    else:
        allowed = current in _APPOINTMENT_ORDER and _APPOINTMENT_ORDER[current] < _APPOINTMENT_ORDER[wanted]
    if not allowed:
        # Cancelled, already further on, or someone in the EHR decided otherwise: theirs stands.
        logger.info("write-back %s: appointment already %s, %s not written", write.pk, current, wanted)
        return
    appointment["status"] = wanted
    _call(visit.endpoint, "PUT", path, appointment, if_match)


def _join_links(visit) -> tuple[str, str]:
    """(patient link, provider link): the patient's signed join link, and where clinicians start."""
    from connector.services.visits import join_token_make, participant_id_for
    from connector.visits.pages.common import public_url

    participant = participant_id_for(ParticipantRole.PATIENT, f"appointment:{visit.appointment_id}")
    token = join_token_make(visit=visit, role=ParticipantRole.PATIENT, participant_id=participant)
    return public_url(reverse("visits:join", kwargs={"token": token})), public_url(
        reverse("visits:provider-launch")
    )


def _join_link(write: WriteBack) -> None:
    visit = write.visit
    patient_link, provider_link = _join_links(visit)
    path = f"Appointment/{visit.fhir_appointment_id}"
    if visit.tenant.ehr_vendor == EhrVendor.ORACLE_HEALTH:
        _oracle_video_visit_links(write, path, provider_link=provider_link, patient_link=patient_link)
        return
    appointment, if_match = _read_for_update(visit.endpoint, path)
    extensions = [e for e in appointment.get("extension") or [] if e.get("url") != VIRTUAL_SERVICE_URL]
    extensions.append(
        {
            "url": VIRTUAL_SERVICE_URL,
            "extension": [
                {
                    "url": "channelType",
                    "valueCoding": {"code": "open-ehr-connector", "display": "Virtual visit"},
                },
                {"url": "addressUrl", "valueUrl": patient_link},
            ],
        }
    )
    appointment["extension"] = extensions
    _call(visit.endpoint, "PUT", path, appointment, if_match)


def _oracle_video_visit_links(write: WriteBack, path: str, *, provider_link: str, patient_link: str) -> None:
    """Oracle Health's Appointment PATCH for video visit links (its FHIR R4 Appointment docs):
    `contained` 0 is the provider's link, 1 the patient's; `add` the first time, `replace` once
    they exist (a second `add` is answered 409), If-Match required."""
    endpoint = write.visit.endpoint
    appointment, if_match = _read_for_update(endpoint, path)
    contained = appointment.get("contained") or []
    op = "replace" if len(contained) >= 2 and all(c.get("address") for c in contained[:2]) else "add"
    patch = [
        {"op": op, "path": "/contained/0/address", "value": provider_link},
        {"op": op, "path": "/contained/1/address", "value": patient_link},
    ]
    _call(endpoint, "PATCH", path, patch, if_match, content_type="application/json-patch+json")


def write_back_perform(write: WriteBack) -> None:
    """Do one write; raises WriteBackFailed."""
    if write.kind in (WriteBack.Kind.APPOINTMENT_STATUS, WriteBack.Kind.JOIN_LINK):
        if not write.visit.fhir_appointment_id:
            raise WriteBackFailed(
                "The visit has no FHIR Appointment to update (unscheduled).", permanent=True
            )
    elif not write.visit.encounter_id:
        raise WriteBackFailed(
            "The launch carried no encounter, so there is nothing to write to. Check the EHR's launch context.",
            permanent=True,
        )
    if write.kind == WriteBack.Kind.VISIT_STARTED:
        _update_encounter(write, status="in-progress", start=write.payload["started_at"])
    elif write.kind == WriteBack.Kind.VISIT_ENDED:
        _update_encounter(
            write, status="finished", start=write.payload["started_at"], end=write.payload["ended_at"]
        )
    elif write.kind == WriteBack.Kind.APPOINTMENT_STATUS:
        _appointment_status(write)
    elif write.kind == WriteBack.Kind.JOIN_LINK:
        _join_link(write)
    else:
        _communication(write)


def backoff_for(attempts: int) -> timedelta:
    return min(FIRST_BACKOFF * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def write_back_send(*, write_back_pk: int) -> str:
    """Claim a due write, perform it, record the outcome. Safe to call twice: only one claim wins."""
    now = timezone.now()
    claimed = WriteBack.objects.filter(
        pk=write_back_pk, state=WriteBackState.PENDING, next_attempt_at__lte=now
    ).update(state=WriteBackState.SENDING, attempts=F("attempts") + 1, next_attempt_at=now + SENDING_LEASE)
    if claimed != 1:
        return "not due"
    write = WriteBack.objects.select_related("visit__endpoint", "visit__tenant").get(pk=write_back_pk)
    try:
        write_back_perform(write)
    except WriteBackFailed as error:
        write.last_error = error.message[:2000]
        if error.permanent or write.attempts >= MAX_ATTEMPTS:
            write.state = WriteBackState.FAILED
            logger.warning("write-back %s failed for good after %s attempt(s)", write.pk, write.attempts)
        else:
            write.state = WriteBackState.PENDING
            write.next_attempt_at = timezone.now() + backoff_for(write.attempts)
            logger.info("write-back %s will be retried (attempt %s)", write.pk, write.attempts)
        write.save(update_fields=["state", "last_error", "next_attempt_at"])
        return write.state
    write.state = WriteBackState.SENT
    write.sent_at = timezone.now()
    write.last_error = ""
    write.save(update_fields=["state", "sent_at", "last_error"])
    return write.state
