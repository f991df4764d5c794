"""Background tasks of the core app: each is called with a primary key, runs in the row's tenant scope
and calls one service (see connector/background.py). Tasks are nudges: connector/sweeper.py queues
again whatever a lost task left behind."""

from __future__ import annotations

from connector.background import tenant_task
from connector.models import FhirEndpoint, WriteBack


@tenant_task(FhirEndpoint)
def endpoint_validate(endpoint: FhirEndpoint, config_version: int | None = None) -> str:
    from connector.services.endpoints import endpoint_validate as validate

    return validate(endpoint=endpoint, config_version=config_version).status


@tenant_task(WriteBack)
def write_back_send(write: WriteBack) -> str:
    from connector.write_back_sender import write_back_send as send

    return send(write_back_pk=write.pk)


def work_sweep() -> dict:
    """Scheduled every minute: queue again every piece of work whose lease ended (connector/sweeper.py)."""
    from connector.sweeper import work_sweep as sweep

    return sweep()


def write_back_retry_due() -> int:
    """Queue the write-backs that are due (the sweeper's write-back step); returns how many."""
    from connector.sweeper import write_backs_recover

    return write_backs_recover()


def launch_states_purge() -> int:
    from connector.services.launch import launch_states_purge as purge

    return purge()


def idempotent_requests_purge() -> int:
    """Scheduled hourly: API answers stored for Idempotency-Key retries, after a day."""
    from connector.api.idempotency import idempotent_requests_purge as purge

    return purge()


def visits_mark_no_show() -> int:
    """Scheduled every 15 minutes: visits past their scheduled end that nobody started."""
    from connector.services.visits import visits_mark_no_show as mark
    from tenants.scoping import all_tenants

    with all_tenants():
        return mark()
