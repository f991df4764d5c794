"""Identifiers of people encrypted at rest (issue 12, item 5).

EHR user IDs (fhirUser URLs), EHR usernames and a launch's context were stored
in plain text. The columns become text, existing rows are encrypted in batches
with FIELD_ENCRYPTION_KEYS (connector/encryption.py), and the values looked up
get a keyed hash beside them (connector/lookup_hash.py, keyed by PHONE_HASH_KEY).
Reversible: going back decrypts.
"""

from django.conf import settings
from django.db import migrations, models

import connector.encryption
import connector.lookup_hash

BATCH = 500

# (model, encrypted column, its lookup-hash column or None)
COLUMNS = [
    ("clinicianlink", "fhir_user", "fhir_user_hash"),
    ("historicalclinicianlink", "fhir_user", "fhir_user_hash"),
    ("visit", "primary_clinician_ehr_id", "primary_clinician_ehr_id_hash"),
    ("endpointapproval", "ehr_username", None),
    ("endpointapproval", "ehr_user", None),
    ("guestinvite", "created_by_ehr_id", None),
    ("launchstate", "context", None),
]


def _is_encrypted(value: str) -> bool:
    from cryptography.fernet import InvalidToken

    try:
        connector.encryption.fernet().decrypt(value.encode())
    except (InvalidToken, ValueError):
        return False
    return True


def _rewrite(apps, schema_editor, change) -> None:
    """Rewrite every non-empty value of the columns in primary-key batches: `change(value) -> (stored, hash)`."""
    alias = schema_editor.connection.alias
    for model_name, column, hash_column in COLUMNS:
        model = apps.get_model("connector", model_name)
        pk_name = model._meta.pk.name
        manager = model._base_manager.db_manager(alias)
        last = None
        while True:
            rows = manager.order_by(pk_name).exclude(**{column: ""})
            if last is not None:
                rows = rows.filter(**{f"{pk_name}__gt": last})
            batch = list(rows.values_list(pk_name, column)[:BATCH])
            if not batch:
                break
            for pk, value in batch:
                stored, hashed = change(value)
                updates = {column: stored}
                if hash_column:
                    updates[hash_column] = hashed
                manager.filter(**{pk_name: pk}).update(**updates)
            last = batch[-1][0]
    if schema_editor.connection.vendor == "postgresql":
        # Run the deferred foreign-key checks the updates queued now: PostgreSQL refuses to ALTER a table
        # with pending trigger events, and the next operations alter these tables.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        schema_editor.execute("SET CONSTRAINTS ALL DEFERRED")  # Django's foreign keys: deferred again


def encrypt_rows(apps, schema_editor):
    from connector.lookup_hash import EHR_USER, lookup_hash

    def change(value):
        plain = connector.encryption.decrypt_text(value) if _is_encrypted(value) else value
        return connector.encryption.encrypt_text(plain), lookup_hash(plain, purpose=EHR_USER)

    _rewrite(apps, schema_editor, change)


def decrypt_rows(apps, schema_editor):
    def change(value):
        plain = connector.encryption.decrypt_text(value) if _is_encrypted(value) else value
        return plain, ""

    _rewrite(apps, schema_editor, change)


def _plain_columns():
    """The columns as text, still holding plain text (the step between the old and the encrypted fields)."""
    return [
        migrations.AlterField(
            model_name="clinicianlink",
            name="fhir_user",
            field=models.TextField(verbose_name="EHR user (absolute fhirUser URL)"),
        ),
        migrations.AlterField(
            model_name="historicalclinicianlink",
            name="fhir_user",
            field=models.TextField(verbose_name="EHR user (absolute fhirUser URL)"),
        ),
        migrations.AlterField(
            model_name="endpointapproval",
            name="ehr_user",
            field=models.TextField(blank=True, verbose_name="EHR user (fhirUser)"),
        ),
        migrations.AlterField(
            model_name="endpointapproval",
            name="ehr_username",
            field=models.TextField(verbose_name="EHR username"),
        ),
        migrations.AlterField(
            model_name="guestinvite",
            name="created_by_ehr_id",
            field=models.TextField(blank=True),
        ),
        migrations.AlterField(
            model_name="launchstate",
            name="context",
            field=models.TextField(blank=True, default="{}"),
        ),
        migrations.AlterField(
            model_name="visit",
            name="primary_clinician_ehr_id",
            field=models.TextField(blank=True),
        ),
    ]


class Migration(migrations.Migration):
    dependencies = [
        ("connector", "0008_endpoint_smart_client_id"),
        ("tenants", "0002_tenant_guest_limit_and_meeting_backend"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="clinicianlink",
            name="one_link_per_environment_and_ehr_user",
        ),
        migrations.AddField(
            model_name="clinicianlink",
            name="fhir_user_hash",
            field=connector.lookup_hash.LookupHashField(purpose="ehr-user", source="fhir_user"),
        ),
        migrations.AddField(
            model_name="historicalclinicianlink",
            name="fhir_user_hash",
            field=connector.lookup_hash.LookupHashField(purpose="ehr-user", source="fhir_user"),
        ),
        migrations.AddField(
            model_name="visit",
            name="primary_clinician_ehr_id_hash",
            field=connector.lookup_hash.LookupHashField(
                purpose="ehr-user", source="primary_clinician_ehr_id"
            ),
        ),
        *_plain_columns(),
        migrations.RunPython(encrypt_rows, decrypt_rows, elidable=False),
        migrations.AlterField(
            model_name="clinicianlink",
            name="fhir_user",
            field=connector.encryption.EncryptedTextField(
                help_text="Encrypted at rest.", verbose_name="EHR user (absolute fhirUser URL)"
            ),
        ),
        migrations.AlterField(
            model_name="endpointapproval",
            name="ehr_user",
            field=connector.encryption.EncryptedTextField(blank=True, verbose_name="EHR user (fhirUser)"),
        ),
        migrations.AlterField(
            model_name="endpointapproval",
            name="ehr_username",
            field=connector.encryption.EncryptedTextField(verbose_name="EHR username"),
        ),
        migrations.AlterField(
            model_name="guestinvite",
            name="created_by_ehr_id",
            field=connector.encryption.EncryptedTextField(blank=True, help_text="Encrypted at rest."),
        ),
        migrations.AlterField(
            model_name="historicalclinicianlink",
            name="fhir_user",
            field=connector.encryption.EncryptedTextField(
                help_text="Encrypted at rest.", verbose_name="EHR user (absolute fhirUser URL)"
            ),
        ),
        migrations.AlterField(
            model_name="launchstate",
            name="context",
            field=connector.encryption.EncryptedJSONField(
                blank=True,
                default=dict,
                help_text="The launch context once the code is exchanged; encrypted at rest.",
            ),
        ),
        migrations.AlterField(
            model_name="visit",
            name="primary_clinician_ehr_id",
            field=connector.encryption.EncryptedTextField(
                blank=True, help_text="The clinician's fhirUser, encrypted at rest."
            ),
        ),
        migrations.AddConstraint(
            model_name="clinicianlink",
            constraint=models.UniqueConstraint(
                fields=("tenant", "environment", "fhir_user_hash"),
                name="one_link_per_environment_and_ehr_user",
            ),
        ),
    ]
