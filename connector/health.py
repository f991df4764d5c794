"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answering."""
    return JsonResponse({"status": "ok"})


def _database_reachable() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        logger.warning("readiness: database unreachable: %s", type(error).__name__)
        return "database unreachable"
    return None


def _broker_reachable() -> str | None:
    from django_q.brokers import get_broker

    try:
        broker = get_broker()
        # The ORM broker's ping() always says yes; counting the queue touches its table.
        if not broker.ping() or broker.queue_size() is None:
            return "task broker unreachable"
    except Exception as error:  # noqa: BLE001
        logger.warning("readiness: task broker unreachable: %s", type(error).__name__)
        return "task broker unreachable"
    return None


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the task broker answer; 503 with the reasons otherwise."""
    problems = [p for p in (_database_reachable(), _broker_reachable()) if p]
    checks = {
        "database": "unreachable" if "database unreachable" in problems else "ok",
        "broker": "unreachable" if "task broker unreachable" in problems else "ok",
    }
    return JsonResponse(
        {"status": "unavailable" if problems else "ok", "checks": checks},
        status=503 if problems else 200,
    )
