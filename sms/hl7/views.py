"""POST /sms/ingest/<Microsoft tenant ID>/<environment>/: the HTTPS transport of the scheduling feed.

Answers 200 with the HL7 ACK (AA, AE or AR) for every message that was read;
401 for a missing or wrong signature, 413 for an oversized body (with an AR as
well, for engines that only read ACKs), 400 for a body that does not start with
MSH, 404 for an unknown organization or environment. Errors other than the ACK
are plain text, for the interface engineer reading them. Nothing raised here
reaches Django's 500 page, which with DEBUG on would show the message.
"""

from __future__ import annotations

import logging

from csp.decorators import csp_exempt
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST

from connector.models import Environment
from sms.hl7.ack import REJECT, ack_build
from sms.hl7.feed_setup import feed_tenant
from sms.hl7.ingest import HEADER_BYTES, HL7_CONTENT_TYPE, HTTP, header_read, ingest_message, max_body_bytes
from sms.hl7.parse import APPLICATION_INTERNAL_ERROR

SIGNATURE_HEADER = "X-HL7-Signature"

logger = logging.getLogger("sms.hl7")


def _text(status: int, message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")


@csrf_exempt  # machine-to-machine: the signature, not a cookie, authenticates
@csp_exempt()  # read by interface engines, never rendered by a browser (docs/security.md)
@require_POST
@sensitive_variables()  # an error report must never show the body (names, phone numbers)
def ingest(request: HttpRequest, tenant_id: str, environment: str) -> HttpResponse:
    # Django's 500 page (with DEBUG on: the demo) shows the request and the view's
    # variables; the feed answers a failure here itself, with nothing from the message.
    # After the signature check ingest_message answers every failure with an ACK;
    # this is for what happens before (the database unreachable, say).
    try:
        return _ingest(request, tenant_id, environment)
    except Exception as error:  # noqa: BLE001
        logger.error("hl7 feed request failed before a message was read: %s", type(error).__name__)
        return _text(503, "the scheduling feed cannot take messages right now: send the message again later")


def _too_large(body: bytes, limit: int) -> HttpResponse:
    """413, with an AR for an engine that reads only ACKs (its header, if the head of the body has one).

    The body is not authenticated (the signature is not checked on what is not
    read); the AR echoes only the tamed header, never anything else.
    """
    ack = ack_build(
        header_read(body[:HEADER_BYTES]),
        REJECT,
        reason=f"the message is larger than {limit} bytes: send it without attachments or notes",
        error_code=APPLICATION_INTERNAL_ERROR,
    )
    return HttpResponse(ack, status=413, content_type=HL7_CONTENT_TYPE)


@sensitive_variables()
def _ingest(request: HttpRequest, tenant_id: str, environment: str) -> HttpResponse:
    tenant = feed_tenant(tenant_id) if environment in Environment.values else None
    if tenant is None:
        return _text(404, "unknown ingest URL: copy it from the SMS configuration record in the portal")
    limit = max_body_bytes()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _too_large(b"", limit)
    body = request.read(limit + 1)  # never more than the limit in memory, whatever the header said
    if len(body) > limit:
        return _too_large(body, limit)
    result = ingest_message(
        tenant=tenant,
        environment=environment,
        body=body,
        signature=request.headers.get(SIGNATURE_HEADER),
        via=HTTP,
    )
    if result.status_code != 200:
        response = _text(result.status_code, result.error)
        if result.status_code == 401:
            response["WWW-Authenticate"] = f'{SIGNATURE_HEADER} realm="scheduling feed"'
        return response
    return HttpResponse(result.ack, status=200, content_type=HL7_CONTENT_TYPE)
