"""EHR write-back through SMART Backend Services, over real HTTP to the sandbox EHR."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connector.models import EndpointStatus, FhirEndpoint, Visit, WriteBack
from connector.sandbox_ehr.models import Resource
from connector.services.visits import event_record, visit_get_or_create
from connector.tasks import write_back_retry_due
from connector.write_back_sender import backoff_for, write_back_send
from tenants.scoping import tenant_scope
from tests.support.sandbox import enable_sandbox, sandbox_base

pytestmark = pytest.mark.django_db(transaction=True)

T0 = timezone.now().replace(microsecond=0) - timedelta(minutes=30)


@pytest.fixture
def visit(settings, live_server, org_a):
    enable_sandbox(settings, live_server)
    with tenant_scope(org_a):
        endpoint = FhirEndpoint.objects.create(
            tenant=org_a,
            base_url=sandbox_base(live_server),
            environment="test",
            label="Main",
            status=EndpointStatus.APPROVED,
            write_back_enabled=True,
        )
        return visit_get_or_create(endpoint=endpoint, appointment_id="appt-1001", encounter_id="enc-1001")


def record(visit, event_id, kind, role, participant, minutes):
    with tenant_scope(visit.tenant):
        visit = Visit.objects.select_related("endpoint", "tenant").get(pk=visit.pk)
        event_record(
            visit=visit,
            event_id=event_id,
            kind=kind,
            role=role,
            participant_id=participant,
            occurred_at=T0 + timedelta(minutes=minutes),
            source="connector",
        )


def encounter():
    return Resource.objects.get(server="r4", resource_type="Encounter", fhir_id="enc-1001").body


def communications():
    return [r.body for r in Resource.objects.filter(server="r4", resource_type="Communication")]


def test_connects_start_and_end_are_written_to_the_ehr(visit):
    # Tasks run inline (tests/conftest.py), and on commit: each event is sent at once.
    record(visit, "1", "joined", "clinician", "c1", 0)
    record(visit, "2", "joined", "patient", "p1", 1)
    assert encounter()["status"] == "in-progress"
    assert encounter()["period"]["start"].startswith((T0 + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M"))
    record(visit, "3", "left", "patient", "p1", 10)
    record(visit, "4", "left", "clinician", "c1", 11)
    assert encounter()["status"] == "finished"
    assert "end" in encounter()["period"]
    texts = sorted(c["payload"][0]["contentString"] for c in communications())
    assert texts == sorted(
        [
            "Clinician connected to the virtual visit",
            "Patient connected to the virtual visit",
            "Patient disconnected from the virtual visit",
            "Clinician disconnected from the virtual visit",
        ]
    )
    assert all(c["encounter"]["reference"] == "Encounter/enc-1001" for c in communications())
    with tenant_scope(visit.tenant):
        assert set(WriteBack.objects.values_list("state", flat=True)) == {"sent"}


def test_a_device_test_result_is_written_back(visit):
    with tenant_scope(visit.tenant):
        v = Visit.objects.select_related("endpoint", "tenant").get(pk=visit.pk)
        event_record(
            visit=v,
            event_id="dt",
            kind="device_test",
            role="patient",
            participant_id="p1",
            occurred_at=T0,
            source="connector",
            data={"camera": "ok", "microphone": "ok"},
        )
    assert (
        communications()[0]["payload"][0]["contentString"] == "Patient device test: camera ok, microphone ok"
    )


def test_a_temporary_ehr_failure_is_retried_with_backoff_until_it_succeeds(visit, settings):
    settings.EHR_HTTP_TOTAL_TIMEOUT = 0.000001  # every call to the EHR times out
    record(visit, "1", "joined", "clinician", "c1", 0)
    with tenant_scope(visit.tenant):
        write = WriteBack.objects.get()
    assert (write.state, write.attempts) == ("pending", 1)
    assert "did not" in write.last_error  # the timeout message
    assert write.next_attempt_at > timezone.now() + backoff_for(1) - timedelta(seconds=5)
    # Not due yet: the retry schedule leaves it alone.
    assert write_back_retry_due() == 0
    settings.EHR_HTTP_TOTAL_TIMEOUT = 15
    with tenant_scope(visit.tenant):
        WriteBack.objects.filter(pk=write.pk).update(next_attempt_at=timezone.now())
    assert write_back_retry_due() == 1
    with tenant_scope(visit.tenant):
        write.refresh_from_db()
    assert (write.state, write.attempts, write.last_error) == ("sent", 2, "")
    assert len(communications()) == 1


def test_a_permanent_failure_stops_and_keeps_its_error(visit):
    with tenant_scope(visit.tenant):
        Visit.objects.filter(pk=visit.pk).update(encounter_id="does-not-exist")
    record(visit, "1", "joined", "clinician", "c1", 0)
    record(visit, "2", "joined", "patient", "p1", 1)
    with tenant_scope(visit.tenant):
        started = WriteBack.objects.get(kind="visit_started")
    assert started.state == "failed"
    assert "404" in started.last_error


def test_a_write_is_never_sent_twice(visit):
    record(visit, "1", "joined", "clinician", "c1", 0)
    with tenant_scope(visit.tenant):
        write = WriteBack.objects.get()
        assert write_back_send(write_back_pk=write.pk) == "not due"
    assert len(communications()) == 1


def test_a_worker_killed_mid_send_is_picked_up_after_its_lease(visit):
    record(visit, "1", "joined", "clinician", "c1", 0)
    with tenant_scope(visit.tenant):
        write = WriteBack.objects.get()
    with tenant_scope(visit.tenant):
        WriteBack.objects.filter(pk=write.pk).update(
            state="sending", sent_at=None, next_attempt_at=timezone.now() - timedelta(seconds=1)
        )
    Resource.objects.filter(resource_type="Communication").delete()
    assert write_back_retry_due() == 1
    assert len(communications()) == 1


def test_failed_writes_are_shown_to_the_organizations_administrators_in_the_portal(
    visit, client, admin_a, admin_b, viewer_a
):
    from tests.conftest import signed_in

    with tenant_scope(visit.tenant):
        Visit.objects.filter(pk=visit.pk).update(encounter_id="does-not-exist")
    record(visit, "1", "joined", "clinician", "c1", 0)
    record(visit, "2", "joined", "patient", "p1", 1)
    page = signed_in(client, admin_a).get("/portal/write-backs/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Visit started" in text and "appt-1001" in text and "HTTP 404" in text
    with tenant_scope(visit.tenant):
        failed = WriteBack.objects.filter(state="failed").count()
    assert failed == 3  # the start, and both Communications (their subject is the Encounter's)
    configure = client.get("/portal/setup/configure/").content.decode()
    assert "3 writes to the EHR did not go through" in configure
    # Try again once the cause is fixed: the writes are sent and leave the list.
    with tenant_scope(visit.tenant):
        Visit.objects.filter(pk=visit.pk).update(encounter_id="enc-1001")
    retried = client.post("/portal/write-backs/retry/", {"write_back": ["all"]}, follow=True)
    assert "3 write(s) will be sent again now" in retried.content.decode()
    with tenant_scope(visit.tenant):
        assert set(WriteBack.objects.values_list("state", flat=True)) == {"sent"}
        failed = WriteBack.objects.get(kind="visit_started")
    assert "Nothing is waiting" in client.get("/portal/write-backs/").content.decode()
    # Another organization's administrator and a viewer see nothing of it.
    with tenant_scope(visit.tenant):
        WriteBack.objects.filter(pk=failed.pk).update(state="failed", last_error="HTTP 404")
    client.logout()
    other = signed_in(client, admin_b).get("/portal/write-backs/").content.decode()
    assert "appt-1001" not in other and "Nothing is waiting" in other
    assert client.post("/portal/write-backs/retry/", {"write_back": [str(failed.pk)]}).status_code == 302
    with tenant_scope(visit.tenant):
        assert WriteBack.objects.get(pk=failed.pk).state == "failed"
    client.logout()
    assert signed_in(client, viewer_a).get("/portal/write-backs/").status_code == 403


def test_a_late_start_write_never_reopens_a_finished_encounter(visit):
    """Writes of one visit may be sent out of order (a retry, two workers): the end stands."""
    record(visit, "1", "joined", "clinician", "c1", 0)
    record(visit, "2", "joined", "patient", "p1", 1)
    record(visit, "3", "left", "patient", "p1", 10)
    record(visit, "4", "left", "clinician", "c1", 11)
    assert encounter()["status"] == "finished"
    with tenant_scope(visit.tenant):
        started = WriteBack.objects.filter(kind=WriteBack.Kind.VISIT_STARTED).first()
        WriteBack.objects.filter(pk=started.pk).update(state="pending", attempts=0, next_attempt_at=timezone.now())
        assert write_back_send(write_back_pk=started.pk) == "sent"  # the start, sent again after the end
    assert encounter()["status"] == "finished"
    assert "end" in encounter()["period"]
