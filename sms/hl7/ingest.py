"""One scheduling message in, one answer out: the single entry point of both transports.

Order of checks, and why:

1. size (413): before anything else looks at the bytes;
2. authentication (401): the X-HL7-Signature over HTTPS, or the TLS client
   certificate over MLLP. Nothing from an unauthenticated sender is parsed or stored;
3. parsing: no MSH at all (400, no ACK possible); unsupported type (AR);
   malformed content (AE);
4. the endpoint: the organization's usable FHIR endpoint of that environment (AR if none).
   The certificate, endpoint, SMS settings and consent come from `feed_setup`, which
   each process keeps for a few seconds (see sms/hl7/feed_setup.py for why that is safe);
5. in one transaction, the processing record (unique on sender and MSH-10) and then
   `appointment_apply`: a message already answered AA or AR gets the same answer
   again without being applied; otherwise AA, or AE if applying fails.

The raw message is never stored nor logged; the log has control IDs and message types.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import IntegrityError, transaction

from connector.row_insert import rows_insert
from sms.hl7.ack import ACCEPT, ERROR, REJECT, ack_build
from sms.hl7.feed_setup import FeedSetup, feed_number_opted_out, feed_setup
from sms.hl7.parse import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    HL7Error,
    Location,
    NotHL7,
    ParsedMessage,
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


def _answer(parsed_or_error, code: str, **kwargs) -> IngestResult:
    envelope = getattr(parsed_or_error, "envelope", None)
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
        endpoint = setup.endpoint
        zone = endpoint.time_zone if endpoint else "UTC"
        try:
            parsed = scheduling_parse(body, time_zone=zone, **_parse_options(setup))
        except NotHL7 as error:
            return _refuse(400, error.reason)
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
            if error.ack_code == REJECT and envelope and envelope.control_id:
                _record(tenant, envelope, REJECT, error.reason)
            return _answer(
                error, error.ack_code, reason=error.reason, error_code=error.code, location=error.location
            )
        envelope = parsed.envelope
        if endpoint is None:
            done = _answered(tenant, envelope)
            if done is not None:
                return _repeat(parsed, done)
            reason = "no FHIR endpoint of this environment is ready (approved or validated) in the portal"
            logger.warning(
                "hl7 %s %s for tenant %s: %s", envelope.message_type, envelope.control_id, tenant.pk, reason
            )
            return _answer(parsed, REJECT, reason=reason, error_code=APPLICATION_INTERNAL_ERROR)
        return _apply(tenant, setup, parsed)


def _parse_options(setup: FeedSetup) -> dict:
    """What the endpoint's SMS settings say about reading its messages: the appointment ID's field
    and the country of numbers sent without a country code."""
    sms_settings = setup.sms_settings
    if sms_settings is None:
        return {}
    return {"id_field": sms_settings.appointment_id_field, "default_region": patient_region(sms_settings)}


def _note(parsed: ParsedMessage) -> str:
    return "; ".join(parsed.notes)[:500]


def _record(tenant: Tenant, envelope, code: str, text: str) -> None:
    """Remember a final answer (AA, or AR for a message that will never be accepted); AE is not final."""
    try:
        with transaction.atomic():
            ProcessedMessage.objects.create(
                tenant=tenant,
                sender=envelope.sender,
                control_id=envelope.control_id,
                message_type=envelope.message_type[:20],
                ack_code=code,
                ack_text=text[:500],
            )
    except IntegrityError:
        pass  # the same message, answered by a concurrent request


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
    result = _answer(parsed, done.ack_code, reason=done.ack_text if done.ack_code != ACCEPT else "")
    return replace(result, duplicate=True)


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
        rows_insert([record])  # save()'s work at a fraction of its cost: see connector/row_insert.py
        applied = appointment_apply(
            endpoint=setup.endpoint,
            message=parsed.scheduling,
            sms_settings=setup.sms_settings,
            consent=setup.consent,
            is_opted_out=feed_number_opted_out,
            assume_new=assume_new,
        )
        if applied.note:
            record.ack_text = "; ".join(filter(None, [applied.note, record.ack_text]))[:500]
            record.save(update_fields=["ack_text"])
    return applied


def _apply(tenant: Tenant, setup: FeedSetup, parsed: ParsedMessage) -> IngestResult:
    envelope = parsed.envelope
    try:
        try:
            # An S12 books a new appointment nearly always: insert it without looking
            # first, and only if it is there after all, do it again the careful way.
            applied = _store(tenant, setup, parsed, assume_new=parsed.scheduling.event == NEW)
        except AppointmentAlreadyStored:
            applied = _store(tenant, setup, parsed, assume_new=False)
    except IntegrityError:
        # Either a message already answered (answer as it was answered), or two
        # messages creating the same appointment at once (the EHR resends on AE).
        done = _answered(tenant, envelope)
        if done is not None:
            return _repeat(parsed, done)
        logger.warning(
            "hl7 %s %s: concurrent update of the same appointment", envelope.message_type, envelope.control_id
        )
        return _answer(
            parsed,
            ERROR,
            reason="the appointment was being updated by another message: send again",
            error_code=APPLICATION_INTERNAL_ERROR,
        )
    except AppointmentIdReused as error:
        logger.warning(
            "hl7 %s %s: appointment ID reused for another patient", envelope.message_type, envelope.control_id
        )
        segment, _, position = error.id_field.partition("-")
        return _answer(
            parsed,
            ERROR,
            reason=error.reason,
            error_code=DATA_TYPE_ERROR,
            location=Location(segment, int(position)),
        )
    except (ValueError, OverflowError) as error:
        logger.warning(
            "hl7 %s %s: not applied (%s)", envelope.message_type, envelope.control_id, type(error).__name__
        )
        return _answer(
            parsed, ERROR, reason="the appointment's dates could not be used", error_code=DATA_TYPE_ERROR
        )
    logger.info(
        "hl7 %s %s applied=%s appointment=%s texts=%d",
        envelope.message_type,
        envelope.control_id,
        applied.applied,
        applied.appointment.pk,
        len(applied.scheduled),
    )
    return _answer(parsed, ACCEPT)
