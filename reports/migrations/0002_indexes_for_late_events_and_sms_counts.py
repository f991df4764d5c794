"""Two indexes the reports need on other apps' tables.

- connector_visitevent (tenant_id, received_at): the scheduled build asks which
  days received events since it last ran; without it that is a scan of every event.
- sms_appointment (endpoint_id, external_id): the Virtual appointments report
  counts each visit's texts by the EHR appointment ID.

Created here, with SQL both SQLite and PostgreSQL accept, so the reports app
does not edit the other apps' models. If the connector or SMS app declares the
same index in its Meta later, drop it here in a new migration.
"""

from django.db import migrations

INDEXES = [
    ("reports_visitevent_tenant_received", "connector_visitevent", "tenant_id, received_at"),
    ("reports_appointment_endpoint_external", "sms_appointment", "endpoint_id, external_id"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0001_daily_rollups_builds_and_allotment_warnings"),
        ("connector", "0002_visits_meetings_events_write_back"),
        ("sms", "0001_sms_setup_appointments_messages"),
    ]

    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})",
            reverse_sql=f"DROP INDEX IF EXISTS {name}",
        )
        for name, table, columns in INDEXES
    ]
