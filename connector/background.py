"""The two helpers every background task goes through: queue after commit, and run in a tenant's scope.

Tasks are nudges; rows are the truth. A task only says "look at row N now".
Everything it needs to know is in the row (its state, its lease), so a task
queued twice, queued late or lost with a dead worker changes nothing: the
periodic sweeper (`connector.sweeper`) queues again whatever a lost task left
behind.

    queue_after_commit("connector.tasks.endpoint_validate", endpoint.pk, version)

queues the task once the surrounding transaction commits (right away when
there is none), so a worker never looks for a row that is not committed yet,
and a rolled-back change queues nothing.

    @tenant_task(FhirEndpoint)
    def endpoint_validate(endpoint: FhirEndpoint, config_version: int | None = None) -> str:
        return services.endpoint_validate(endpoint=endpoint, config_version=config_version).status

is called by django-q2 with the primary key (`endpoint_validate(42, 3)`): the
decorator loads the row (with its tenant), enters the tenant's scope and
calls the function with the row; a row deleted meanwhile answers "gone".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import models, transaction
from django_q.tasks import async_task

from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=models.Model)

GONE = "gone"


def queue_now(func: str, *args: Any, **kwargs: Any) -> None:
    """Queue a task at once. Only for callers that are outside any transaction (the sweeper)."""
    async_task(func, *args, **kwargs)


def queue_after_commit(func: str, *args: Any, **kwargs: Any) -> None:
    """Queue the task `func` (dotted path) once the current transaction commits (now if there is none)."""
    transaction.on_commit(functools.partial(queue_now, func, *args, **kwargs))


def tenant_task(model: type[M], *, tenant_field: str = "tenant") -> Callable:
    """Make `fn(row, *args)` a task called with the row's primary key, run in the row's tenant scope."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def task(pk: int, *args: Any, **kwargs: Any) -> Any:
            with all_tenants():
                row = model._default_manager.select_related(tenant_field).filter(pk=pk).first()
            if row is None:
                logger.info("%s: %s %s is gone", fn.__name__, model.__name__, pk)
                return GONE
            with tenant_scope(getattr(row, tenant_field)):
                return fn(row, *args, **kwargs)

        return task

    return decorate
