"""The feed migration: events stored before it get feed positions in the order they were stored,
each organization its own counter, and visits their first arrival."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("connector", "0008_i12e_encrypt_ehr_user_ids")]
AFTER = [("connector", "0009_i15v_api_visits")]
WHEN = datetime(2027, 1, 12, 15, 30, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_existing_events_get_positions_per_organization_and_visits_their_arrival():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    from tenants.models import Tenant  # tenants stayed at their latest migration

    tenants = [
        Tenant.objects.create(
            name=f"Migrating {n}",
            microsoft_tenant_id=f"4444444{n}-4444-4444-8444-444444444444",
            ehr_vendor="epic",
            data_region="americas",
            status="enabled",
        )
        for n in range(2)
    ]
    made = {}
    for tenant in tenants:
        endpoint = old.get_model("connector", "FhirEndpoint").objects.create(
            tenant_id=tenant.pk,
            base_url=f"https://fhir.example.org/{tenant.pk}",
            environment="test",
            label="T",
        )
        visit = old.get_model("connector", "Visit").objects.create(
            tenant_id=tenant.pk, endpoint=endpoint, public_id=f"v{tenant.pk}", appointment_id="A"
        )
        made[tenant.pk] = visit.pk
        for n, kind in enumerate(["device_test", "lobby_entered", "joined", "left"]):
            old.get_model("connector", "VisitEvent").objects.create(
                tenant_id=tenant.pk,
                visit=visit,
                event_id=f"e{n}",
                kind=kind,
                role="patient",
                participant_id="p",
                occurred_at=WHEN + timedelta(minutes=n),
                source="demo",
            )

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    VisitEvent = new.get_model("connector", "VisitEvent")
    for tenant in tenants:
        events = VisitEvent.objects.filter(tenant_id=tenant.pk).order_by("pk")
        assert [e.seq for e in events] == [1, 2, 3, 4]
        assert new.get_model("connector", "VisitFeed").objects.get(tenant_id=tenant.pk).last_seq == 4
        visit = new.get_model("connector", "Visit").objects.get(pk=made[tenant.pk])
        assert visit.arrived_at == WHEN + timedelta(minutes=1)
    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
