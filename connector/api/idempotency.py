"""`Idempotency-Key` for API POSTs: a retried request gets the first answer, and nothing is done twice.

The key is claimed in its own committed transaction before the action runs (a row without an
answer), then the answer is stored. A retry with the same key and the same request (method,
path and body) gets the stored answer with `Idempotent-Replayed: true`; the same key with a
different request is refused with 422; a retry that arrives while the first is still running
gets 409 (try again shortly). A request that fails with an error did nothing: its claim is
released, so the client may retry it with the same key. Keys are per caller (API token or
person) and organization.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from functools import wraps

from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from connector.api.access import caller_token
from connector.models import IdempotentRequest
from tenants.scoping import all_tenants

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Stored answers are kept this long (connector.tasks.idempotent_requests_purge, hourly): a retry
# comes within minutes; after a day the same key is a new request.
KEEP_ANSWERS_FOR = timedelta(hours=24)


# The header as an OpenAPI parameter, for the views that honour it.
IDEMPOTENCY_HEADER = [
    OpenApiParameter(
        HEADER,
        str,
        OpenApiParameter.HEADER,
        description="Any unique string (a UUID): a retry with the same key and body gets the first answer, "
        "and the action is not done again.",
    )
]


class KeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = (
        "This Idempotency-Key was already used for a different request (another path or body). "
        "Use a new key for a new request."
    )


class KeyInUse(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_key_in_use"
    default_detail = (
        "A request with this Idempotency-Key is still being processed. Retry in a few seconds "
        "to get its answer."
    )


def _caller(request) -> str:
    token = caller_token(request)
    return f"token:{token.pk}" if token is not None else f"user:{request.user.pk}"


def _digest(request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method}\n{request.path}\n{body}".encode()).hexdigest()


def idempotent(post):
    """Decorates an API view's `post` (a TenantAPIViewMixin view: `self.tenant` is set)."""

    @wraps(post)
    def wrapped(self, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return post(self, request, *args, **kwargs)
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise exceptions.ValidationError(
                {HEADER: [f"Send 1 to {MAX_KEY_LENGTH} printable characters, e.g. a UUID."]}
            )
        identity = {"tenant": self.tenant, "caller": _caller(request), "key": key}
        digest = _digest(request)
        try:
            with transaction.atomic():
                claim = IdempotentRequest.objects.create(request_digest=digest, **identity)
        except IntegrityError:
            stored = IdempotentRequest.objects.get(**identity)
            if stored.request_digest != digest:
                raise KeyReused() from None
            if stored.status_code is None:
                raise KeyInUse() from None
            return Response(
                stored.response_body, status=stored.status_code, headers={"Idempotent-Replayed": "true"}
            )
        try:
            response = post(self, request, *args, **kwargs)
        except BaseException:
            claim.delete()  # nothing was done: the same key may be retried
            raise
        if response.status_code >= 400:
            claim.delete()
            return response
        # Stored as it was sent (the JSON renderer's encoding), so a replay is byte for byte the same.
        sent = json.loads(JSONRenderer().render(response.data))
        IdempotentRequest.objects.filter(pk=claim.pk).update(
            status_code=response.status_code, response_body=sent
        )
        return response

    return wrapped


def idempotent_requests_purge() -> int:
    """Forget stored answers older than KEEP_ANSWERS_FOR, in every organization; returns how many."""
    with all_tenants():
        deleted, _ = IdempotentRequest.objects.filter(
            created_at__lt=timezone.now() - KEEP_ANSWERS_FOR
        ).delete()
    return deleted
