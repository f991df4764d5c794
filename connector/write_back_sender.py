"""Sending EHR write-backs as standard FHIR through SMART Backend Services.

- Encounter: status `in-progress` with `period.start` when the visit starts,
  `finished` with `period.end` when it ends (read, change, update with If-Match).
- Communication: one for each participant connect and disconnect and each
  device test result, about the Encounter, naming only the role.

Authentication: client credentials with a private_key_jwt assertion (RS384),
the token cached until shortly before it expires. Temporary failures retry with
exponential backoff (a schedule picks up rows that are due); permanent ones stop
and show in the admin with their error.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import F
from django.utils import timezone

from connector.ehr_http import EhrHttpError, ehr_post_form, ehr_request_json
from connector.models import FhirEndpoint, WriteBack, WriteBackState
from connector.services.launch import LaunchError, smart_configuration_for
from connector.signing_keys import client_authentication

logger = logging.getLogger(__name__)

BACKEND_SCOPES = "system/Encounter.read system/Encounter.write system/Communication.write"
MAX_ATTEMPTS = 8
FIRST_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=1)
# A worker killed mid-send leaves its row "sending"; after this lease it is tried again.
SENDING_LEASE = timedelta(minutes=10)


class WriteBackFailed(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


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
                **client_authentication(client_id=settings.SMART_CLIENT_ID, token_endpoint=token_endpoint),
            },
            raise_for_status=False,
        )
    except EhrHttpError as error:
        raise WriteBackFailed(
            f"The EHR's token endpoint failed: {error.message}", permanent=error.permanent
        ) from error
    body = response.json if isinstance(response.json, dict) else {}
    if response.status != 200 or "access_token" not in body:
        raise WriteBackFailed(
            f"The EHR refused backend access ({body.get('error', response.status)}): register the connector for "
            "SMART Backend Services with its JWKS URL and these scopes: " + BACKEND_SCOPES,
            permanent=response.status in (400, 401, 403),
        )
    lifetime = int(body.get("expires_in", 300))
    cache.set(key, body["access_token"], max(lifetime - 60, 30))
    return body["access_token"]


def _call(
    endpoint: FhirEndpoint, method: str, path: str, body: dict | None = None, headers: dict | None = None
):
    token = backend_services_token(endpoint)
    try:
        return ehr_request_json(
            method,
            f"{endpoint.base_url}/{path}",
            json_body=body,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
        )
    except EhrHttpError as error:
        if error.status == 401:
            cache.delete(f"backend-token:{endpoint.pk}:{endpoint.config_version}")
        raise WriteBackFailed(
            f"{method} {path.split('/')[0]} failed: {error.message}", permanent=error.permanent
        ) from error


def _update_encounter(
    write: WriteBack, *, status: str, start: str | None = None, end: str | None = None
) -> None:
    visit = write.visit
    path = f"Encounter/{visit.encounter_id}"
    current = _call(visit.endpoint, "GET", path)
    encounter = dict(current.json)
    encounter["status"] = status
    period = dict(encounter.get("period") or {})
    if start:
        period["start"] = start
    if end:
        period["end"] = end
    encounter["period"] = period
    version = (encounter.get("meta") or {}).get("versionId")
    headers = {"If-Match": f'W/"{version}"'} if version else None
    _call(visit.endpoint, "PUT", path, encounter, headers)


_TEXT = {
    WriteBack.Kind.PARTICIPANT_CONNECTED: "{role} connected to the virtual visit",
    WriteBack.Kind.PARTICIPANT_DISCONNECTED: "{role} disconnected from the virtual visit",
    WriteBack.Kind.DEVICE_TEST: "{role} device test: {result}",
}


def _communication(write: WriteBack) -> None:
    visit = write.visit
    payload = write.payload
    result = ", ".join(f"{k} {v}" for k, v in sorted((payload.get("result") or {}).items()))
    text = _TEXT[write.kind].format(role=str(payload.get("role", "participant")).capitalize(), result=result)
    body = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"text": "virtual-visit"}],
        "encounter": {"reference": f"Encounter/{visit.encounter_id}"},
        "sent": payload["occurred_at"],
        "payload": [{"contentString": text}],
        "identifier": [{"system": "urn:open-ehr-connector:event", "value": write.dedupe_key}],
    }
    _call(visit.endpoint, "POST", "Communication", body)


def write_back_perform(write: WriteBack) -> None:
    """Do one write; raises WriteBackFailed."""
    if not write.visit.encounter_id:
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
