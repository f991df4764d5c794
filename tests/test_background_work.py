"""Tasks are nudges, rows are the truth: the task helpers, leases, and the one sweeper."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import date, timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.contrib.admin.sites import site
from django.db import connection, transaction
from django.test import RequestFactory
from django.utils import timezone

from connector.background import GONE, queue_after_commit, tenant_task
from connector.management.commands.setup_schedules import declared_schedules
from connector.models import EndpointStatus, FhirEndpoint, WriteBack, WriteBackState
from connector.services.endpoints import VALIDATION_LEASE, endpoint_create, endpoint_request_validation
from connector.sweeper import work_sweep
from reports.jobs import JOB_LEASE, rollup_days_mark_due, rollup_job_build, rollup_jobs_retry
from reports.models import RollupJob, RollupJobState
from tenants.scoping import all_tenants, tenant_scope

BASE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the two helpers ----------------------------------------------------------------------------


def test_a_task_queued_in_a_transaction_that_rolls_back_is_never_queued(db, monkeypatch):
    queued = []
    monkeypatch.setattr("connector.background.async_task", lambda *a, **k: queued.append(a))
    with pytest.raises(RuntimeError), transaction.atomic():
        queue_after_commit("connector.tasks.endpoint_validate", 1, 1)
        raise RuntimeError("rolled back")
    assert queued == []


def test_a_task_is_queued_only_once_its_transaction_commits(db, monkeypatch, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr("connector.background.async_task", lambda *a, **k: queued.append(a))
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        queue_after_commit("connector.tasks.endpoint_validate", 7, 2)
        assert queued == []  # not while the row may still be invisible to a worker
    assert queued == [("connector.tasks.endpoint_validate", 7, 2)]


def test_a_tenant_task_loads_its_row_and_runs_in_that_organizations_scope(org_a, org_b):
    with tenant_scope(org_a):
        mine = FhirEndpoint.objects.create(tenant=org_a, base_url="https://a.example.org/R4", environment="test")
    with tenant_scope(org_b):
        FhirEndpoint.objects.create(tenant=org_b, base_url="https://b.example.org/R4", environment="test")

    @tenant_task(FhirEndpoint)
    def visible(endpoint: FhirEndpoint) -> list[str]:
        return list(FhirEndpoint.objects.values_list("base_url", flat=True))

    assert visible(mine.pk) == ["https://a.example.org/R4"]  # B's endpoint is out of scope
    assert visible(10**9) == GONE


def test_no_task_is_queued_inside_a_transaction_anywhere():
    """The four former offenders (and everyone else) go through queue_after_commit or the sweeper."""
    offenders = []
    for folder in ("connector", "sms", "reports", "tenants"):
        for root, _dirs, files in os.walk(os.path.join(BASE, folder)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    with open(path, encoding="utf-8") as handle:
                        if "async_task(" in handle.read() and not path.endswith("connector/background.py"):
                            offenders.append(os.path.relpath(path, BASE))
    assert offenders == ["tenants/services.py"] or offenders == [], offenders


# --- the one sweeper ---------------------------------------------------------------------------


def test_one_sweeper_is_scheduled_every_minute():
    specs = {spec["func"]: spec for spec in declared_schedules()}
    assert specs["connector.tasks.work_sweep"]["minutes"] == 1
    assert "connector.tasks.write_back_retry_due" not in specs
    assert "sms.tasks.phone_numbers_provision_stalled" not in specs


def _validating(org, monkeypatch) -> FhirEndpoint:
    monkeypatch.setattr("connector.background.async_task", lambda *a, **k: None)  # the task is lost
    with tenant_scope(org):
        endpoint = endpoint_create(
            tenant=org, base_url="https://ehr.example.org/R4", environment="test", label="Main", time_zone="UTC"
        )
        endpoint = endpoint_request_validation(endpoint=endpoint)
    assert endpoint.status == EndpointStatus.VALIDATING
    return endpoint


def _refuse(base_url, **kwargs):
    from connector.endpoint_checks import EndpointCheckResult

    return EndpointCheckResult(ok=False, code="unreachable", message="No answer.", checked_at=timezone.now())


def test_a_lost_validation_task_is_queued_again_when_its_lease_ends(
    org_a, monkeypatch, django_capture_on_commit_callbacks
):
    endpoint = _validating(org_a, monkeypatch)
    monkeypatch.undo()
    monkeypatch.setattr("connector.services.endpoints.check_fhir_endpoint", _refuse)
    assert work_sweep()["endpoints"] == 0  # still within its lease
    with (
        time_machine.travel(timezone.now() + VALIDATION_LEASE + timedelta(seconds=1)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert work_sweep()["endpoints"] == 1  # queued again, and run inline by the test queue
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.DRAFT
    assert endpoint.last_validation["code"] == "unreachable"


def test_a_validation_that_keeps_dying_is_given_up_with_a_message(org_a, monkeypatch):
    endpoint = _validating(org_a, monkeypatch)
    moment = timezone.now()
    for _ in range(3):
        moment += VALIDATION_LEASE + timedelta(seconds=1)
        with tenant_scope(org_a):
            # A worker took it and died: its run counted an attempt, its lease ran out.
            FhirEndpoint.objects.filter(pk=endpoint.pk).update(validation_attempts=endpoint.validation_attempts + 1)
            endpoint.refresh_from_db()
        with time_machine.travel(moment):
            work_sweep()
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.DRAFT
    assert endpoint.last_validation["code"] == "interrupted"
    assert "stopped 3 times" in endpoint.last_validation["message"]


def _hanging_server() -> tuple[socket.socket, int]:
    """A TCP server that accepts connections and never answers: an EHR that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []

    def accept_forever():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_forever, daemon=True).start()
    return server, server.getsockname()[1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="a second process needs a shared database")
def test_a_worker_killed_mid_validation_leaves_validating_within_its_lease(org_b, monkeypatch):
    """A real process runs the validation task and is SIGKILLed while it waits on the EHR."""
    server, port = _hanging_server()
    monkeypatch.setattr("connector.background.async_task", lambda *a, **k: None)
    with tenant_scope(org_b):
        endpoint = FhirEndpoint.objects.create(
            tenant=org_b, base_url=f"http://127.0.0.1:{port}/fhir/R4", environment="test", label="Hangs"
        )
        endpoint = endpoint_request_validation(endpoint=endpoint)
    db = django_settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "EHR_INSECURE_HOSTS": "127.0.0.1",
        "EHR_HTTP_TOTAL_TIMEOUT": "60",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from connector.tasks import endpoint_validate; "
            f"endpoint_validate({endpoint.pk}, {endpoint.config_version})",
        ],
        cwd=BASE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with all_tenants():
                step = FhirEndpoint.objects.get(pk=endpoint.pk).validation_step
            if step not in ("queued", ""):
                break
            time.sleep(0.1)
        assert step not in ("queued", ""), "the worker never started the validation"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
        server.close()
    with all_tenants():
        endpoint = FhirEndpoint.objects.get(pk=endpoint.pk)
    assert endpoint.status == EndpointStatus.VALIDATING  # the dead worker left it so
    assert endpoint.validation_attempts == 1
    monkeypatch.undo()
    monkeypatch.setattr("connector.services.endpoints.check_fhir_endpoint", _refuse)
    with time_machine.travel(endpoint.validation_lease_until + timedelta(seconds=1)):
        assert work_sweep()["endpoints"] == 1
    with all_tenants():
        endpoint = FhirEndpoint.objects.get(pk=endpoint.pk)
    assert endpoint.status == EndpointStatus.DRAFT and endpoint.validation_step == ""


# --- write-back --------------------------------------------------------------------------------


def _write_back(org, state, next_attempt_at):
    from connector.models import Visit

    with tenant_scope(org):
        endpoint = FhirEndpoint.objects.create(tenant=org, base_url="https://wb.example.org/R4", environment="test")
        visit = Visit.objects.create(tenant=org, endpoint=endpoint, appointment_id="A-1")
        return WriteBack.objects.create(
            tenant=org, visit=visit, kind="visit_started", dedupe_key="k", state=state, next_attempt_at=next_attempt_at
        )


def test_retry_now_leaves_a_write_back_that_is_being_sent_alone(
    org_a, admin_user, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("connector.background.async_task", lambda *a, **k: queued.append(a))
    busy = _write_back(org_a, WriteBackState.SENDING, timezone.now() + timedelta(minutes=5))
    request = RequestFactory().post("/admin/")
    request.user = admin_user
    monkeypatch.setattr("django.contrib.admin.ModelAdmin.message_user", lambda *a, **k: None)
    with all_tenants():
        site._registry[WriteBack].retry_now(request, WriteBack.objects.filter(pk=busy.pk))
        busy.refresh_from_db()
    assert busy.state == WriteBackState.SENDING and queued == []
    with all_tenants(), django_capture_on_commit_callbacks(execute=True):
        WriteBack.objects.filter(pk=busy.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        site._registry[WriteBack].retry_now(request, WriteBack.objects.filter(pk=busy.pk))
        busy.refresh_from_db()
    assert busy.state == WriteBackState.PENDING and queued == [("connector.tasks.write_back_send", busy.pk)]


# --- roll-up jobs ------------------------------------------------------------------------------


def test_a_day_whose_build_died_is_built_after_its_lease(org_a, monkeypatch):
    built = []
    monkeypatch.setattr("reports.jobs.rollup_build", lambda **kw: built.append(kw["first"]) or "ok")
    monkeypatch.setattr("connector.background.async_task", lambda *a, **k: None)  # the tasks are lost
    with tenant_scope(org_a):
        [pk] = rollup_days_mark_due(tenant=org_a, days=[date(2026, 4, 1)])
        RollupJob.objects.filter(pk=pk).update(state=RollupJobState.BUILDING)  # a worker took it and died
    monkeypatch.undo()
    monkeypatch.setattr("reports.jobs.rollup_build", lambda **kw: built.append(kw["first"]) or "ok")
    assert work_sweep()["rollups"] == 0
    with time_machine.travel(timezone.now() + JOB_LEASE + timedelta(seconds=1)):
        assert work_sweep()["rollups"] == 1
    with all_tenants():
        job = RollupJob.objects.get(pk=pk)
    assert job.state == RollupJobState.DONE and built == [date(2026, 4, 1)]


def test_retry_now_on_a_day_being_built_builds_it_again_after_never_alongside(
    org_a, monkeypatch, django_capture_on_commit_callbacks
):
    calls = []
    monkeypatch.setattr("connector.background.async_task", lambda *a, **k: calls.append(("queued", *a)))

    def build(**kw):
        # While this build runs, support staff press "Retry now".
        with all_tenants():
            rollup_jobs_retry(jobs=RollupJob.objects.select_related("tenant").filter(day=kw["first"]))
        calls.append(("built", kw["first"]))
        return "ok"

    monkeypatch.setattr("reports.jobs.rollup_build", build)
    with tenant_scope(org_a):
        [pk] = rollup_days_mark_due(tenant=org_a, days=[date(2026, 4, 1)])
        job = RollupJob.objects.select_related("tenant").get(pk=pk)
        with django_capture_on_commit_callbacks(execute=True):
            rollup_job_build(job=job)
        job.refresh_from_db()
    # The retry did not start a second build; the day is due again, queued once the build ended.
    assert [c[0] for c in calls].count("built") == 1
    assert job.state == RollupJobState.DUE and not job.again
    assert calls[-1] == ("queued", "reports.tasks.rollup_job_build", pk)


def test_support_staff_see_roll_up_jobs_and_retry_a_failed_day(admin_client, org_a, monkeypatch):
    monkeypatch.setattr("connector.background.async_task", lambda *a, **k: None)
    with tenant_scope(org_a):
        job = RollupJob.objects.create(
            tenant=org_a, day=date(2026, 4, 1), state=RollupJobState.FAILED, attempts=3, last_error="boom"
        )
    page = admin_client.get("/admin/reports/rollupjob/")
    assert page.status_code == 200 and b"boom" in page.content
    response = admin_client.post(
        "/admin/reports/rollupjob/", {"action": "retry_now", "_selected_action": [job.pk]}, follow=True
    )
    assert b"1 day(s) queued again" in response.content
    with all_tenants():
        job.refresh_from_db()
    assert (job.state, job.attempts, job.last_error) == (RollupJobState.DUE, 0, "")
