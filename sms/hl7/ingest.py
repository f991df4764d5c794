"""One scheduling message in, one answer out: the single entry point of both transports.

Order of checks, and why:

1. size (413): before anything else looks at the bytes;
2. authentication (401): the X-HL7-Signature over HTTPS, or the TLS client
   certificate over MLLP. Nothing from an unauthenticated sender is parsed or stored;
3. before parsing, batches (FHS/BHS: AR, send messages one by one), NUL bytes
   (AE) and the caps on segments, field length and repetitions (AR, see
   sms/hl7/limits.py); then parsing: no MSH at all (400, no ACK possible);
   unsupported type (AR); malformed content (AE);
4. the endpoint: the organization's usable FHIR endpoint of that environment (AR if none).
   The certificate, endpoint, SMS settings and consent come from `feed_setup`, which
   each process keeps for a few seconds (see sms/hl7/feed_setup.py for why that is safe);
5. in one transaction, the processing record (unique on sender and MSH-10) and then
   `appointment_apply`: a message already accepted gets AA again without being
   applied; otherwise AA, or AE if applying fails.

From the signature check on, nothing raises: whatever goes wrong becomes an AE
whose ERR says what to fix, and whether sending it again can help (only when the
database is unavailable). Rejections (AE and AR) are recorded for the admin but
never answer a resend: a corrected message with the same control ID is processed.

The raw message is never stored nor logged; the log has control IDs, message
types and, for a failure, the error's type and the line it was raised at.
"""

from __future__ import annotations

import hmac
import logging
import re
import traceback
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from sms.hl7.ack import ACCEPT, ERROR, REJECT, ack_build
from sms.hl7.feed_setup import FeedSetup, feed_number_opted_out, feed_setup
from sms.hl7.limits import limits_check
from sms.hl7.parse import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    SEGMENT_SEQUENCE_ERROR,
    Envelope,
    HL7Error,
    Location,
    NotHL7,
    ParsedMessage,
    envelope_read,
    er7_parse,
    scheduling_parse,
)
from sms.hl7.signature import SignatureInvalid, verify_signature
from sms.models import ProcessedMessage, SigningCertificate
from sms.phones import patient_region
from sms.services.appointments import (
    NEW,
    AppliedMessage,
    AppointmentAlreadyStored,
    AppointmentIdReused,
    appointment_apply,
)
from tenants.models import Tenant
from tenants.scoping import tenant_scope

logger = logging.getLogger("sms.hl7")

DEFAULT_MAX_BODY_BYTES = 64 * 1024
HTTP, MLLP = "http", "mllp"
HL7_CONTENT_TYPE = "x-application/hl7-v2+er7; charset=utf-8"
HEADER_BYTES = 4096  # of a message not processed: enough for its MSH, to answer it
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def max_body_bytes() -> int:
    return int(getattr(settings, "HL7_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))


@dataclass(frozen=True)
class IngestResult:
    """`ack` is the ER7 acknowledgement when `status_code` is 200; otherwise `error` says why, as plain text."""

    status_code: int
    ack: str
    ack_code: str = ""  # AA, AE, AR (200 only)
    error: str = ""
    control_id: str = ""
    duplicate: bool = False


@dataclass(frozen=True)
class TlsClientIdentity:
    """A TLS client certificate the MLLP listener verified during the handshake.

    The only way to skip the signature check: `ingest_message(via="mllp")` requires
    one, and accepts it only if its SHA-256 thumbprint is that of the organization's
    active certificate for the environment when the message is handled (so replacing
    the certificate in the portal cuts off open connections too, within
    HL7_FEED_SETUP_CACHE_SECONDS: see sms/hl7/feed_setup.py).
    """

    thumbprint_sha256: str  # upper-case hex of the DER certificate the peer presented


def _refuse(status_code: int, error: str) -> IngestResult:
    return IngestResult(status_code=status_code, ack="", error=error)


def _answer(envelope: Envelope | None, code: str, **kwargs) -> IngestResult:
    reason = kwargs.pop("reason", "")
    ack = ack_build(envelope, code, reason=reason, **kwargs)
    return IngestResult(
        status_code=200,
        ack=ack,
        ack_code=code,
        error=reason,
        control_id=envelope.control_id if envelope else "",
        duplicate=False,
    )


def _authenticate(
    *,
    certificate: SigningCertificate | None,
    body: bytes,
    signature: str | None,
    via: str,
    peer: TlsClientIdentity | None,
) -> str:
    """Why the sender is not who the organization set up (for a 401), or "" when it is."""
    if certificate is None:
        return (
            "no signing certificate is set up for this environment: upload the EHR's certificate "
            "in the portal (SMS settings) first"
        )
    now = timezone.now()
    if certificate.not_after <= now:
        return (
            f"the organization's signing certificate for this environment expired on "
            f"{certificate.not_after:%Y-%m-%d}: upload the EHR's renewed certificate in the portal"
        )
    if certificate.not_before > now:
        return (
            f"the organization's signing certificate for this environment is not valid before "
            f"{certificate.not_before:%Y-%m-%d %H:%M} UTC"
        )
    if via == MLLP:
        if peer is None:
            return "no TLS client certificate was presented"
        if not hmac.compare_digest(peer.thumbprint_sha256.upper(), certificate.thumbprint_sha256.upper()):
            return (
                "the TLS client certificate is not the organization's active certificate for this environment"
            )
        return ""
    try:
        verify_signature(body, signature or "", certificate)
    except SignatureInvalid as error:
        return error.reason
    return ""


def ingest_message(
    *,
    tenant: Tenant,
    environment: str,
    body: bytes,
    signature: str | None,
    via: str,
    peer: TlsClientIdentity | None = None,
) -> IngestResult:
    """Authenticate, parse and apply one HL7v2 scheduling message for `tenant`; the answer to send back.

    `via` is "http" (the signature header is required and checked) or "mllp" (the
    TLS client certificate in `peer` is the authentication; `signature` is ignored).
    Once the sender is authenticated, every outcome is an ACK (status 200), except
    a body that does not even start with MSH (400): nothing raises past this function.
    """
    if via not in (HTTP, MLLP):
        raise ValueError(f"unknown transport {via!r}")
    if via == HTTP and peer is not None:
        raise ValueError("a TLS client identity is for MLLP only: over HTTP the signature is required")
    if len(body) > max_body_bytes():
        return _refuse(413, f"the message is larger than {max_body_bytes()} bytes")
    with tenant_scope(tenant):
        setup = feed_setup(tenant, environment)
        refused = _authenticate(
            certificate=setup.certificate, body=body, signature=signature, via=via, peer=peer
        )
        if refused and setup.kept:
            # The certificate may have been replaced in another process since it was read.
            setup = feed_setup(tenant, environment, fresh=True)
            refused = _authenticate(
                certificate=setup.certificate, body=body, signature=signature, via=via, peer=peer
            )
        if refused:
            logger.warning(
                "hl7 %s message refused for tenant %s (%s): %s", via, tenant.pk, environment, refused
            )
            return _refuse(401, refused)
        try:
            return _authenticated(tenant, setup, body)
        except Exception as error:  # noqa: BLE001 - an authenticated sender always gets an ACK
            return _failed(tenant, body, error)


def header_read(body: bytes) -> Envelope | None:
    """The envelope of a message that will not be processed, if its MSH can be read; never raises."""
    first = _LINE_BREAK.split(body.lstrip(b"\xef\xbb\xbf\x0b \t\r\n"), maxsplit=1)[0]
    first = first.replace(b"\x00", b"")[:HEADER_BYTES]
    try:
        return envelope_read(er7_parse(first), check_type=False)
    except Exception:  # noqa: BLE001 - any header python-hl7 cannot read is answered without one
        return None


def _authenticated(tenant: Tenant, setup: FeedSetup, body: bytes) -> IngestResult:
    stripped = body.lstrip(b"\xef\xbb\xbf\x0b \t\r\n")
    if stripped[:3] in (b"FHS", b"BHS"):
        reason = (
            "batches (FHS/BHS) are not accepted: send each message on its own, one per HTTPS request "
            "or MLLP frame"
        )
        logger.info("hl7 batch refused for tenant %s", tenant.pk)
        return _answer(None, REJECT, reason=reason, error_code=SEGMENT_SEQUENCE_ERROR)
    exceeded = limits_check(body)
    if exceeded is not None:
        envelope = header_read(body)
        logger.info(
            "hl7 %s %s refused before parsing (%s %s): %s",
            envelope.message_type if envelope else "?",
            envelope.control_id if envelope else "?",
            exceeded.ack_code,
            exceeded.code,
            exceeded.reason,
        )
        _record_rejection(tenant, envelope, exceeded.ack_code, exceeded.reason)
        return _answer(
            envelope,
            exceeded.ack_code,
            reason=exceeded.reason,
            error_code=exceeded.code,
            location=exceeded.location,
        )
    endpoint = setup.endpoint
    zone = endpoint.time_zone if endpoint else "UTC"
    try:
        parsed = scheduling_parse(body, time_zone=zone, **_parse_options(setup))
    except NotHL7 as error:
        if not stripped.startswith(b"MSH"):
            return _refuse(400, error.reason)
        # It claims to be HL7: an answer it can read, without a header to echo.
        return _answer(None, REJECT, reason=error.reason, error_code=error.code)
    except HL7Error as error:
        envelope = error.envelope
        logger.info(
            "hl7 %s %s refused (%s %s): %s",
            envelope.message_type if envelope else "?",
            envelope.control_id if envelope else "?",
            error.ack_code,
            error.code,
            error.reason,
        )
        _record_rejection(tenant, envelope, error.ack_code, error.reason)
        return _answer(
            envelope, error.ack_code, reason=error.reason, error_code=error.code, location=error.location
        )
    envelope = parsed.envelope
    if endpoint is None:
        done = _answered(tenant, envelope)
        if done is not None and done.ack_code == ACCEPT:
            return _repeat(parsed, done)
        reason = "no FHIR endpoint of this environment is ready (approved or validated) in the portal"
        logger.warning(
            "hl7 %s %s for tenant %s: %s", envelope.message_type, envelope.control_id, tenant.pk, reason
        )
        _record_rejection(tenant, envelope, REJECT, reason)
        return _answer(envelope, REJECT, reason=reason, error_code=APPLICATION_INTERNAL_ERROR)
    return _apply(tenant, setup, parsed)


def failure_answer(error: BaseException) -> tuple[str, str]:
    """(reason for the sender, HL7 table 0357 code) for an unexpected error: does sending again help?

    Only a database that is unreachable or busy is worth a resend of the same
    message; any other failure happens again for the same bytes, and an engine
    that resends in order would stall the whole feed on it.
    """
    if isinstance(error, (OperationalError, InterfaceError)):
        return (
            "the connector's database is unavailable right now: send the message again",
            APPLICATION_INTERNAL_ERROR,
        )
    if isinstance(error, DataError):
        return (
            "a value in the message cannot be stored (a character or number out of range): correct the "
            "message; sent unchanged it will fail again",
            DATA_TYPE_ERROR,
        )
    return (
        "the connector could not process this message; sent unchanged it will fail again: give the "
        "message control ID to the connector's administrators",
        APPLICATION_INTERNAL_ERROR,
    )


def _failed(tenant: Tenant, body: bytes, error: Exception) -> IngestResult:
    """AE for what went wrong after authentication: logged by type and place only (values may be PHI)."""
    envelope = header_read(body)
    reason, code = failure_answer(error)
    frame = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f"{frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno}" if frame else "?"
    logger.error(
        "hl7 %s %s for tenant %s failed: %s at %s",
        envelope.message_type if envelope else "?",
        envelope.control_id if envelope else "?",
        tenant.pk,
        type(error).__name__,
        where,
    )
    if not isinstance(error, (OperationalError, InterfaceError)):
        _record_rejection(tenant, envelope, ERROR, reason)
    return _answer(envelope, ERROR, reason=reason, error_code=code)


def _parse_options(setup: FeedSetup) -> dict:
    """What the endpoint's SMS settings say about reading its messages: the appointment ID's field
    and the country of numbers sent without a country code."""
    sms_settings = setup.sms_settings
    if sms_settings is None:
        return {}
    return {"id_field": sms_settings.appointment_id_field, "default_region": patient_region(sms_settings)}


def _note(parsed: ParsedMessage) -> str:
    return "; ".join(parsed.notes)[:500]


def _db_text(text: str, limit: int) -> str:
    """A header value as the database can store it: PostgreSQL refuses NUL in text."""
    return text.replace("\x00", "")[:limit]


def _record_rejection(tenant: Tenant, envelope: Envelope | None, code: str, text: str) -> None:
    """Keep the last answer to a refused message for the admin; never final, and never raises.

    Rejections (AE and AR) are recorded but not remembered as answers: a corrected
    resend with the same control ID is processed (the AA replaces the record), and
    an unchanged one is refused again by the same checks, which cost less than a lookup.
    """
    if envelope is None or not envelope.control_id:
        return
    key = {
        "tenant": tenant,
        "sender": _db_text(envelope.sender, 200),
        "control_id": _db_text(envelope.control_id, 200),
    }
    values = {"message_type": _db_text(envelope.message_type, 20), "ack_code": code, "ack_text": text[:500]}
    try:
        with transaction.atomic():
            if ProcessedMessage.objects.filter(**key).exclude(ack_code=ACCEPT).update(**values):
                return
            ProcessedMessage.objects.create(**key, **values)
    except IntegrityError:
        pass  # accepted already (a resend of an accepted message that now fails), or a concurrent answer
    except DatabaseError as error:
        logger.warning("hl7 rejection not recorded: %s", type(error).__name__)


def _answered(tenant: Tenant, envelope) -> ProcessedMessage | None:
    return ProcessedMessage.objects.filter(
        tenant=tenant, sender=envelope.sender, control_id=envelope.control_id
    ).first()


def _repeat(parsed: ParsedMessage, done: ProcessedMessage) -> IngestResult:
    envelope = parsed.envelope
    logger.info(
        "hl7 %s %s already answered %s: not processed again",
        envelope.message_type,
        envelope.control_id,
        done.ack_code,
    )
    return replace(_answer(envelope, ACCEPT), duplicate=True)


def _store(tenant: Tenant, setup: FeedSetup, parsed: ParsedMessage, *, assume_new: bool) -> AppliedMessage:
    """The processing record and the message applied, in one transaction."""
    envelope = parsed.envelope
    with transaction.atomic():
        # The record first: a resend (or the same message arriving twice at once)
        # fails here on the unique constraint before anything is applied, and a
        # new message costs no extra query to find out it is new.
        record = ProcessedMessage(
            tenant=tenant,
            sender=envelope.sender,
            control_id=envelope.control_id,
            message_type=envelope.message_type[:20],
            ack_code=ACCEPT,
            ack_text=_note(parsed),
        )
        record.save(force_insert=True)
        applied = appointment_apply(
            endpoint=setup.endpoint,
            message=parsed.scheduling,
            sms_settings=setup.sms_settings,
            consent=setup.consent,
            is_opted_out=feed_number_opted_out,
            assume_new=assume_new,
            webhook_event_types=setup.webhook_event_types,
        )
        if applied.note:
            record.ack_text = "; ".join(filter(None, [applied.note, record.ack_text]))[:500]
            record.save(update_fields=["ack_text"])
    return applied


def _store_once_more_if_rejected(tenant: Tenant, setup: FeedSetup, parsed: ParsedMessage) -> AppliedMessage:
    """Store; if the control ID's record is an earlier rejection, the corrected resend replaces it."""
    try:
        return _store_new_or_update(tenant, setup, parsed)
    except IntegrityError:
        done = _answered(tenant, parsed.envelope)
        if done is None or done.ack_code == ACCEPT:
            raise
        ProcessedMessage.objects.filter(pk=done.pk).exclude(ack_code=ACCEPT).delete()
        return _store_new_or_update(tenant, setup, parsed)


def _store_new_or_update(tenant: Tenant, setup: FeedSetup, parsed: ParsedMessage) -> AppliedMessage:
    try:
        # An S12 books a new appointment nearly always: insert it without looking
        # first, and only if it is there after all, do it again the careful way.
        return _store(tenant, setup, parsed, assume_new=parsed.scheduling.event == NEW)
    except AppointmentAlreadyStored:
        return _store(tenant, setup, parsed, assume_new=False)


def _apply(tenant: Tenant, setup: FeedSetup, parsed: ParsedMessage) -> IngestResult:
    envelope = parsed.envelope
    try:
        applied = _store_once_more_if_rejected(tenant, setup, parsed)
    except IntegrityError:
        # Either a message already accepted (answer AA again, apply nothing), or two
        # messages creating the same appointment at once (the EHR resends on AE).
        done = _answered(tenant, envelope)
        if done is not None and done.ack_code == ACCEPT:
            return _repeat(parsed, done)
        logger.warning(
            "hl7 %s %s: concurrent update of the same appointment", envelope.message_type, envelope.control_id
        )
        return _answer(
            envelope,
            ERROR,
            reason="the appointment was being updated by another message at the same moment: send again",
            error_code=APPLICATION_INTERNAL_ERROR,
        )
    except AppointmentIdReused as error:
        logger.warning(
            "hl7 %s %s: appointment ID reused for another patient", envelope.message_type, envelope.control_id
        )
        segment, _, position = error.id_field.partition("-")
        return _answer(
            envelope,
            ERROR,
            reason=error.reason,
            error_code=DATA_TYPE_ERROR,
            location=Location(segment, int(position)),
        )
    except (ValueError, OverflowError) as error:
        logger.warning(
            "hl7 %s %s: not applied (%s)", envelope.message_type, envelope.control_id, type(error).__name__
        )
        reason = (
            "the appointment's start or end is out of range (TQ1-7/8, SCH-11, SCH-9/10): correct it and "
            "send the message again"
        )
        _record_rejection(tenant, envelope, ERROR, reason)
        return _answer(envelope, ERROR, reason=reason, error_code=DATA_TYPE_ERROR)
    logger.info(
        "hl7 %s %s applied=%s appointment=%s texts=%d",
        envelope.message_type,
        envelope.control_id,
        applied.applied,
        applied.appointment.pk,
        len(applied.scheduled),
    )
    return _answer(envelope, ACCEPT)
