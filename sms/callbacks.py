"""Provider callbacks: delivery reports and inbound texts, each checked with the provider's signature scheme.

POST /sms/callbacks/<provider>/ where <provider> is "twilio" or "acs" (and
"locmem" where the test backend is configured). A rejected signature gets 403
and changes nothing.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from connector.background import queue_after_commit
from sms.backends import get_sms_backend
from sms.backends.base import CallbackRejected
from sms.services.inbound import delivery_report_apply, inbound_handle

logger = logging.getLogger(__name__)

CALLBACK_BACKENDS = {
    "twilio": "sms.backends.twilio.TwilioSmsBackend",
    "acs": "sms.backends.acs.AcsSmsBackend",
    "locmem": "sms.backends.locmem.LocmemSmsBackend",
    "recording": "sms.backends.recording.RecordingSmsBackend",
}


@csrf_exempt
@require_http_methods(["POST", "OPTIONS"])  # OPTIONS: Event Grid's CloudEvents handshake
def provider_callback(request: HttpRequest, provider: str) -> HttpResponse:
    path = CALLBACK_BACKENDS.get(provider)
    # The test backends' callbacks exist only where that backend is in use.
    test_backend = provider in ("locmem", "recording")
    if path is None or (test_backend and getattr(settings, "SMS_BACKEND", "") != path):
        return JsonResponse({"error": f"No SMS callback for {provider!r}."}, status=404)
    try:
        result = get_sms_backend(path).parse_callback(request)
    except CallbackRejected as error:
        logger.warning("%s callback rejected: %s", provider, error)
        return JsonResponse({"error": str(error)}, status=403)
    applied = sum(delivery_report_apply(report) for report in result.reports)
    handled = [inbound_handle(text) for text in result.inbound]
    if result.inbound:
        # Answers to STOP / HELP go out through the dispatcher right away.
        queue_after_commit("sms.tasks.messages_dispatch")
    if result.response is not None:
        return result.response
    return JsonResponse({"reports": applied, "inbound": handled}, status=200)
