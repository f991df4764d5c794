"""`rows_insert`: the same rows as save() and bulk_create(), without their per-call machinery."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, transaction

from connector.row_insert import rows_insert
from sms.models import Appointment, MessageKind, OutboundMessage, ProcessedMessage, SmsConsent
from tenants.scoping import tenant_scope
from tests.support.hl7_feed import ready_endpoint

START = datetime(2027, 1, 12, 15, 30, tzinfo=UTC)


@pytest.fixture
def endpoint(org_a):
    return ready_endpoint(org_a)


def appointment(endpoint, external_id: str) -> Appointment:
    return Appointment(
        tenant=endpoint.tenant,
        endpoint=endpoint,
        sending_facility="NVH",
        external_id=external_id,
        start=START,
        end=START.replace(hour=16),
        time_zone="America/Chicago",
        department="NVH Cardiology",
        language="es",
        phone="+14155550123",
        phone_last_four="0123",
        state_as_of=START.replace(day=5),
    )


def stored(model, pk) -> dict:
    row = model.objects.filter(pk=pk).values().get()
    return {k: v for k, v in row.items() if k not in ("id", "external_id", "created_at", "updated_at")}


def test_it_stores_what_save_stores(org_a, endpoint):
    with tenant_scope(org_a):
        saved, inserted = appointment(endpoint, "by-save"), appointment(endpoint, "by-rows-insert")
        saved.save()

        rows_insert([inserted])

        assert inserted.pk is not None and inserted.pk != saved.pk
        assert inserted._state.adding is False
        assert stored(Appointment, inserted.pk) == stored(Appointment, saved.pk)
        # auto_now_add and auto_now were filled in, on the instance too.
        fresh = Appointment.objects.get(pk=inserted.pk)
        assert fresh.created_at == inserted.created_at and fresh.updated_at == inserted.updated_at


def test_encrypted_fields_are_stored_encrypted(org_a, endpoint):
    with tenant_scope(org_a):
        row = appointment(endpoint, "encrypted")

        rows_insert([row])

        with connection.cursor() as cursor:
            cursor.execute("SELECT phone FROM sms_appointment WHERE id = %s", [row.pk])
            [raw] = cursor.fetchone()
        assert "4155550123" not in raw
        assert Appointment.objects.get(pk=row.pk).phone == "+14155550123"


def test_an_inserted_row_is_then_updated_not_inserted_again(org_a, endpoint):
    with tenant_scope(org_a):
        row = appointment(endpoint, "then-updated")
        rows_insert([row])

        row.department = "NVH Neurology"
        row.save()

        assert Appointment.objects.count() == 1
        assert Appointment.objects.get().department == "NVH Neurology"


def test_a_unique_violation_raises_as_save_would(org_a):
    with tenant_scope(org_a):
        first = ProcessedMessage(tenant=org_a, sender="EPIC^NVH", control_id="1", message_type="SIU^S12")
        rows_insert([first])
        again = ProcessedMessage(tenant=org_a, sender="EPIC^NVH", control_id="1", message_type="SIU^S13")

        with pytest.raises(IntegrityError), transaction.atomic():
            rows_insert([again])

        assert [m.message_type for m in ProcessedMessage.objects.all()] == ["SIU^S12"]


def test_several_rows_get_their_keys_in_order(org_a):
    with tenant_scope(org_a):
        rows = [
            ProcessedMessage(tenant=org_a, sender="EPIC^NVH", control_id=str(n), message_type="SIU^S12")
            for n in range(3)
        ]

        rows_insert(rows)

        assert [ProcessedMessage.objects.get(pk=row.pk).control_id for row in rows] == ["0", "1", "2"]


def test_ignore_conflicts_skips_only_the_conflicting_rows(org_a, endpoint):
    with tenant_scope(org_a):
        visit = appointment(endpoint, "texts")
        rows_insert([visit])
        number = endpoint.sms_settings.phone_number

        def text(key: str) -> OutboundMessage:
            return OutboundMessage(
                tenant=org_a,
                appointment=visit,
                phone_number=number,
                kind=MessageKind.REMINDER,
                to="+14155550123",
                to_last_four="0123",
                to_hash="h" * 64,
                send_at=START,
                dedupe_key=key,
            )

        rows_insert([text("a")], ignore_conflicts=True)
        rows_insert([text("a"), text("b")], ignore_conflicts=True)

        assert sorted(OutboundMessage.objects.values_list("dedupe_key", flat=True)) == ["a", "b"]


def test_a_related_object_saved_after_assignment_gives_its_key(org_a, endpoint):
    with tenant_scope(org_a):
        visit = appointment(endpoint, "assigned-before-saved")
        text = OutboundMessage(
            tenant=org_a,
            appointment=visit,
            phone_number=endpoint.sms_settings.phone_number,
            kind=MessageKind.CONFIRMATION,
            to_hash="h" * 64,
            dedupe_key="k",
        )
        rows_insert([visit])

        rows_insert([text], ignore_conflicts=True)

        assert OutboundMessage.objects.get().appointment_id == visit.pk


def test_it_refuses_a_model_whose_saves_are_listened_to(org_a):
    # SmsConsent keeps audit history through post_save: skipping it would lose history.
    consent = SmsConsent(tenant=org_a)

    with pytest.raises(TypeError, match="receivers"):
        rows_insert([consent])


def test_it_refuses_instances_of_several_models(org_a, endpoint):
    with pytest.raises(TypeError, match="one model"):
        rows_insert(
            [
                appointment(endpoint, "x"),
                ProcessedMessage(tenant=org_a, sender="s", control_id="c", message_type="t"),
            ]
        )


def test_nothing_to_insert_is_no_query(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        rows_insert([])
