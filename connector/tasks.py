"""Background tasks of the core app. Each takes primary keys, scopes to the tenant and calls one service."""

from __future__ import annotations

from connector.models import FhirEndpoint
from tenants.scoping import all_tenants, tenant_scope


def endpoint_validate(endpoint_pk: int, config_version: int | None = None) -> str:
    from connector.services.endpoints import endpoint_validate as validate

    with all_tenants():
        endpoint = FhirEndpoint.objects.select_related("tenant").filter(pk=endpoint_pk).first()
    if endpoint is None:
        return "gone"
    with tenant_scope(endpoint.tenant):
        endpoint = validate(endpoint=endpoint, config_version=config_version)
    return endpoint.status


def write_back_send(write_back_pk: int) -> str:
    from connector.models import WriteBack
    from connector.write_back_sender import write_back_send as send

    with all_tenants():
        write = WriteBack.objects.select_related("tenant").filter(pk=write_back_pk).first()
    if write is None:
        return "gone"
    with tenant_scope(write.tenant):
        return send(write_back_pk=write_back_pk)


def write_back_retry_due() -> int:
    """Scheduled every minute: queue the write-backs whose backoff has passed."""
    from django.utils import timezone
    from django_q.tasks import async_task

    from connector.models import WriteBack, WriteBackState

    with all_tenants():
        # Rows whose worker died mid-send come back once their lease has passed.
        WriteBack.objects.filter(state=WriteBackState.SENDING, next_attempt_at__lte=timezone.now()).update(
            state=WriteBackState.PENDING
        )
        due = list(
            WriteBack.objects.filter(state=WriteBackState.PENDING, next_attempt_at__lte=timezone.now())
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:500]
        )
    for pk in due:
        async_task("connector.tasks.write_back_send", pk)
    return len(due)


def launch_states_purge() -> int:
    from connector.services.launch import launch_states_purge as purge

    return purge()
