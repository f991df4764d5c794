"""The identity migration: appointments get their endpoint's environment; IDs that were unique only per
facility stay apart (the older one gets its facility appended) instead of failing the new constraint."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("sms", "0003_dispatch_outcomes_and_patient_cap")]
AFTER = [("sms", "0004_i11b_appointment_identity_short_links")]


@pytest.mark.django_db(transaction=True)
def test_appointments_get_their_environment_and_duplicate_ids_stay_apart():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    Appointment = executor.loader.project_state(BEFORE).apps.get_model("sms", "Appointment")
    # Only sms went back: the other apps' tables are at their latest, so their current models.
    from connector.models import FhirEndpoint
    from tenants.models import Tenant
    from tenants.scoping import all_tenants

    with all_tenants():
        _migrate_with_two_appointments_of_one_id(executor, Appointment, FhirEndpoint, Tenant)


def _migrate_with_two_appointments_of_one_id(executor, Appointment, FhirEndpoint, Tenant) -> None:
    tenant = Tenant.objects.create(
        name="Migrating Health", microsoft_tenant_id="33333333-3333-4333-8333-333333333333",
        ehr_vendor="epic", data_region="americas", status="enabled",
    )
    production = FhirEndpoint.objects.create(
        tenant=tenant, base_url="https://fhir.example.org/p", environment="production", label="P"
    )
    when = datetime(2027, 1, 12, 15, 30, tzinfo=UTC)
    common = dict(tenant_id=tenant.pk, endpoint_id=production.pk, start=when, end=when, state_as_of=when)
    older = Appointment.objects.create(sending_facility="NVH", external_id="4000", **common)
    newer = Appointment.objects.create(sending_facility="NVHEAST", external_id="4000", **common)

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    Appointment = executor.loader.project_state(AFTER).apps.get_model("sms", "Appointment")

    rows = {row.pk: row for row in Appointment.objects.all()}
    assert {row.environment for row in rows.values()} == {"production"}
    assert rows[newer.pk].external_id == "4000"
    assert rows[older.pk].external_id == "4000@NVH"
    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
