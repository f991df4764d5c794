"""Identifiers of people (EHR user IDs, fhirUser URLs, EHR usernames) are encrypted at rest (issue 12, item 5).

The raw columns hold no plain text; lookups go through a keyed hash beside the
value (connector/lookup_hash.py); `rotate_field_keys` and `rehash_phone_numbers`
move them to new keys; migration 0008 encrypts the rows that were plain text.
"""

from __future__ import annotations

import hashlib
import hmac
import io

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, Min

from connector.lookup_hash import EHR_USER, lookup_hash
from connector.models import (
    ClinicianLink,
    EndpointApproval,
    FhirEndpoint,
    GuestInvite,
    LaunchState,
    Visit,
)
from connector.services.launch import clinician_link_find, clinician_link_get_or_create
from sms.phones import number_hash, number_hashes
from tenants.scoping import all_tenants, tenant_scope

FHIR_USER = "https://ehr.example.org/fhir/Practitioner/dr-secret-4711"
USERNAME = "SECRETDOC4711"
SECRET_PART = "secret"  # in every value below: must appear in no raw column


def _raw(table: str, column: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "{column}" FROM "{table}"')  # noqa: S608 (test constants)
        return [row[0] for row in cursor.fetchall()]


def _plain_anywhere() -> dict[str, list[str]]:
    """Every raw value of the encrypted columns that shows the secret part."""
    columns = [
        ("connector_clinicianlink", "fhir_user"),
        ("connector_historicalclinicianlink", "fhir_user"),
        ("connector_visit", "primary_clinician_ehr_id"),
        ("connector_endpointapproval", "ehr_user"),
        ("connector_endpointapproval", "ehr_username"),
        ("connector_guestinvite", "created_by_ehr_id"),
        ("connector_launchstate", "context"),
    ]
    found = {}
    for table, column in columns:
        leaking = [v for v in _raw(table, column) if v and SECRET_PART in str(v).lower()]
        if leaking:
            found[f"{table}.{column}"] = leaking
    return found


@pytest.fixture
def endpoint(org_a):
    with tenant_scope(org_a):
        return FhirEndpoint.objects.create(
            tenant=org_a, base_url="https://ehr.example.org/fhir", environment="test", label="Test EHR"
        )


@pytest.fixture
def rows(org_a, admin_a, endpoint):
    """One row of every model that holds an EHR user's identifier."""
    with tenant_scope(org_a):
        link = ClinicianLink.objects.create(
            tenant=org_a, environment="test", fhir_user=FHIR_USER, user=admin_a
        )
        visit = Visit.objects.create(
            tenant=org_a,
            public_id="v-encrypted-1",
            endpoint=endpoint,
            appointment_id="CSN-1",
            primary_clinician=admin_a,
            primary_clinician_ehr_id=FHIR_USER,
        )
        approval = EndpointApproval.objects.create(
            tenant=org_a,
            endpoint=endpoint,
            config_version=1,
            base_url=endpoint.base_url,
            decision="approved",
            decided_by=admin_a,
            ehr_username=USERNAME,
            ehr_user=FHIR_USER,
        )
        invite = GuestInvite.objects.create(
            tenant=org_a,
            visit=visit,
            kind="family",
            participant_id="g-encrypted-1",
            created_by_ehr_id=FHIR_USER,
        )
    state = LaunchState.objects.create(
        state_hash="h" * 64,
        endpoint=endpoint,
        role="clinician",
        code_verifier="v" * 64,
        nonce="n" * 32,
        browser_binding="b" * 64,
        context={"view": "meeting", "fhir_user": FHIR_USER, "appointment_id": "CSN-1"},
    )
    return {"link": link, "visit": visit, "approval": approval, "invite": invite, "state": state}


def test_the_raw_columns_hold_no_identifier_and_the_models_read_it_back(org_a, rows):
    assert _plain_anywhere() == {}
    with tenant_scope(org_a):
        assert ClinicianLink.objects.get().fhir_user == FHIR_USER
        assert Visit.objects.get().primary_clinician_ehr_id == FHIR_USER
        approval = EndpointApproval.objects.get()
        assert (approval.ehr_username, approval.ehr_user) == (USERNAME, FHIR_USER)
        assert GuestInvite.objects.get().created_by_ehr_id == FHIR_USER
    assert LaunchState.objects.get().context["fhir_user"] == FHIR_USER
    # The hashes beside the values are the keyed hash, not the value.
    assert _raw("connector_clinicianlink", "fhir_user_hash") == [lookup_hash(FHIR_USER, purpose=EHR_USER)]
    assert _raw("connector_visit", "primary_clinician_ehr_id_hash") == [
        lookup_hash(FHIR_USER, purpose=EHR_USER)
    ]


def test_a_clinician_link_is_found_by_its_hash_and_stays_one_per_environment(org_a, admin_a, rows):
    with tenant_scope(org_a):
        assert clinician_link_find(environment="test", fhir_user=FHIR_USER) == rows["link"]
        assert clinician_link_find(environment="production", fhir_user=FHIR_USER) is None
        assert clinician_link_find(environment="test", fhir_user=FHIR_USER + "0") is None
        with pytest.raises(IntegrityError), transaction.atomic():
            ClinicianLink.objects.create(tenant=org_a, environment="test", fhir_user=FHIR_USER, user=admin_a)
        again = clinician_link_get_or_create(
            tenant=org_a, environment="test", fhir_user=FHIR_USER, user=admin_a
        )
        assert again == rows["link"]
        production = clinician_link_get_or_create(
            tenant=org_a, environment="production", fhir_user=FHIR_USER, user=admin_a
        )
        assert production != rows["link"]


def test_saving_only_the_identifier_moves_its_hash_too(org_a, rows):
    visit = rows["visit"]
    other = "https://ehr.example.org/fhir/Practitioner/dr-secret-other"
    with tenant_scope(org_a):
        visit.primary_clinician_ehr_id = other
        visit.save(update_fields=["primary_clinician_ehr_id"])
        assert (
            Visit.objects.get(
                primary_clinician_ehr_id_hash=lookup_hash(other, purpose=EHR_USER)
            ).primary_clinician_ehr_id
            == other
        )
        visit.primary_clinician_ehr_id = ""
        visit.save(update_fields=["primary_clinician_ehr_id"])
    assert _raw("connector_visit", "primary_clinician_ehr_id_hash") == [""]


def test_a_filter_on_an_encrypted_column_fails_loudly_instead_of_matching_nothing(org_a, rows):
    with tenant_scope(org_a):
        with pytest.raises(FieldError, match="encrypted.*keyed hash"):
            list(ClinicianLink.objects.filter(fhir_user=FHIR_USER))
        with pytest.raises(FieldError, match="encrypted"):
            list(Visit.objects.filter(primary_clinician_ehr_id__icontains="dr-"))
        # Empty is stored as is: that comparison means what it says.
        assert Visit.objects.exclude(primary_clinician_ehr_id="").count() == 1
        assert GuestInvite.objects.filter(created_by_ehr_id="").count() == 0


def test_visits_group_by_clinician_through_the_hash_as_docs_reports_shows(org_a, rows, endpoint):
    with tenant_scope(org_a):
        Visit.objects.create(
            tenant=org_a,
            public_id="v-2",
            endpoint=endpoint,
            appointment_id="CSN-2",
            primary_clinician_ehr_id=FHIR_USER,
        )
        groups = list(
            Visit.objects.values("primary_clinician_ehr_id_hash")
            .annotate(n=Count("pk"), clinician_ehr_id=Min("primary_clinician_ehr_id"))
            .values_list("clinician_ehr_id", "n")
        )
    assert groups == [(FHIR_USER, 2)]


def test_rotate_field_keys_reencrypts_every_identifier_without_new_history(settings, org_a, rows):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    with all_tenants():
        history_before = ClinicianLink.history.count()
    out = io.StringIO()

    call_command("rotate_field_keys", stdout=out)

    settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key is gone: every row must still read
    fernet = Fernet(new_key.encode())
    for table, column in [
        ("connector_clinicianlink", "fhir_user"),
        ("connector_historicalclinicianlink", "fhir_user"),
        ("connector_visit", "primary_clinician_ehr_id"),
        ("connector_endpointapproval", "ehr_user"),
        ("connector_guestinvite", "created_by_ehr_id"),
    ]:
        (token,) = _raw(table, column)
        assert fernet.decrypt(token.encode()).decode() == FHIR_USER, f"{table}.{column}"
    assert fernet.decrypt(_raw("connector_endpointapproval", "ehr_username")[0].encode()).decode() == USERNAME
    assert FHIR_USER in fernet.decrypt(_raw("connector_launchstate", "context")[0].encode()).decode()
    assert "connector.LaunchState: 1 row(s)" in out.getvalue()
    with all_tenants():
        assert ClinicianLink.history.count() == history_before
        assert ClinicianLink.objects.get().fhir_user == FHIR_USER


def test_rehash_moves_ehr_user_hashes_to_the_new_key_and_links_stay_found(settings, org_a, rows):
    old, new = "o" * 40, "n" * 40
    settings.PHONE_HASH_KEY = [old]
    call_command("rehash_phone_numbers", stdout=io.StringIO())  # the fixture's rows: now under `old`
    old_hash = lookup_hash(FHIR_USER, purpose=EHR_USER)

    settings.PHONE_HASH_KEY = [new, old]
    with tenant_scope(org_a):  # before the rehash: found under the older key
        assert clinician_link_find(environment="test", fhir_user=FHIR_USER) == rows["link"]
    out = io.StringIO()
    call_command("rehash_phone_numbers", stdout=out)

    new_hash = lookup_hash(FHIR_USER, purpose=EHR_USER)
    assert new_hash != old_hash
    assert _raw("connector_clinicianlink", "fhir_user_hash") == [new_hash]
    assert _raw("connector_visit", "primary_clinician_ehr_id_hash") == [new_hash]
    assert "connector.ClinicianLink: 1 EHR user ID hash(es) re-hashed" in out.getvalue()
    settings.PHONE_HASH_KEY = [new]  # the old key dropped
    with tenant_scope(org_a):
        assert clinician_link_find(environment="test", fhir_user=FHIR_USER) == rows["link"]


def test_phone_hashes_are_unchanged_by_the_generalized_hash(settings):
    settings.PHONE_HASH_KEY = ["k" * 40, "j" * 40]

    def before(key: str, number: str) -> str:  # sms/phones.py before connector/lookup_hash.py
        derived = hashlib.sha256(f"phone-lookup:{key}".encode()).digest()
        return hmac.new(derived, number.encode(), hashlib.sha256).hexdigest()

    assert number_hash("+14155550100") == before("k" * 40, "+14155550100")
    assert number_hashes("+14155550100") == (
        before("k" * 40, "+14155550100"),
        before("j" * 40, "+14155550100"),
    )
    # A phone number and an EHR user ID never share a hash.
    assert lookup_hash("+14155550100", purpose=EHR_USER) != number_hash("+14155550100")


AFTER = [("connector", "0008_i12e_encrypt_ehr_user_ids")]


def _before() -> list[tuple[str, str]]:
    """The connector migrations 0008_i12e comes right after (whatever merges came later)."""
    graph = MigrationExecutor(connection).loader.graph
    return sorted(parent.key for parent in graph.node_map[AFTER[0]].parents if parent.key[0] == "connector")


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_existing_plain_text_rows_and_reverses():
    from tenants.models import Tenant

    before = _before()
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    user_model = old.get_model("auth", "User")
    try:
        with all_tenants():
            tenant = Tenant.objects.create(
                name="Migrating Health",
                microsoft_tenant_id="44444444-4444-4444-8444-444444444444",
                ehr_vendor="epic",
                data_region="americas",
                status="enabled",
            )
        user = user_model.objects.create(username="migrating-doc")
        endpoint = old.get_model("connector", "FhirEndpoint").objects.create(
            tenant_id=tenant.pk, base_url="https://ehr.example.org/fhir", environment="test", label="T"
        )
        link = old.get_model("connector", "ClinicianLink").objects.create(
            tenant_id=tenant.pk, environment="test", fhir_user=FHIR_USER, user_id=user.pk
        )
        old.get_model("connector", "HistoricalClinicianLink").objects.create(
            id=link.pk,
            tenant_id=tenant.pk,
            environment="test",
            fhir_user=FHIR_USER,
            user_id=user.pk,
            created_at=link.created_at,
            history_date=link.created_at,
            history_type="+",
        )
        visits = old.get_model("connector", "Visit")
        for n in range(3):  # more than one row per model
            visits.objects.create(
                tenant_id=tenant.pk,
                public_id=f"v-m-{n}",
                endpoint_id=endpoint.pk,
                appointment_id=f"CSN-{n}",
                primary_clinician_ehr_id=FHIR_USER if n else "",
            )
        old.get_model("connector", "EndpointApproval").objects.create(
            tenant_id=tenant.pk,
            endpoint_id=endpoint.pk,
            config_version=1,
            base_url=endpoint.base_url,
            decision="approved",
            decided_by_id=user.pk,
            ehr_username=USERNAME,
            ehr_user=FHIR_USER,
        )
        old.get_model("connector", "GuestInvite").objects.create(
            tenant_id=tenant.pk,
            visit_id=visits.objects.get(public_id="v-m-1").pk,
            kind="family",
            participant_id="g-m-1",
            created_by_ehr_id=FHIR_USER,
        )
        old.get_model("connector", "LaunchState").objects.create(
            state_hash="m" * 64,
            endpoint_id=endpoint.pk,
            role="clinician",
            code_verifier="v" * 64,
            nonce="n",
            browser_binding="b",
            context={"fhir_user": FHIR_USER, "view": "console"},
        )
        assert _plain_anywhere() != {}  # the starting point: plain text

        MigrationExecutor(connection).migrate(AFTER)

        assert _plain_anywhere() == {}
        with all_tenants():
            assert clinician_link_find(environment="test", fhir_user=FHIR_USER).user_id == user.pk
            assert ClinicianLink.history.get().fhir_user == FHIR_USER
            by_id = dict(Visit.objects.values_list("public_id", "primary_clinician_ehr_id"))
            assert by_id == {"v-m-0": "", "v-m-1": FHIR_USER, "v-m-2": FHIR_USER}
            assert sorted(_raw("connector_visit", "primary_clinician_ehr_id_hash")) == [
                "",
                lookup_hash(FHIR_USER, purpose=EHR_USER),
                lookup_hash(FHIR_USER, purpose=EHR_USER),
            ]
            approval = EndpointApproval.objects.get()
            assert (approval.ehr_username, approval.ehr_user) == (USERNAME, FHIR_USER)
            assert GuestInvite.objects.get().created_by_ehr_id == FHIR_USER
        assert LaunchState.objects.get().context == {"fhir_user": FHIR_USER, "view": "console"}

        MigrationExecutor(connection).migrate(before)  # going back decrypts

        assert _raw("connector_clinicianlink", "fhir_user") == [FHIR_USER]
        assert sorted(_raw("connector_endpointapproval", "ehr_username")) == [USERNAME]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_bulk_created_visits_get_their_hash_as_the_demo_activity_makes_them(org_a, endpoint):
    with tenant_scope(org_a):
        Visit.objects.bulk_create(
            [
                Visit(
                    tenant=org_a,
                    public_id=f"v-bulk-{n}",
                    endpoint=endpoint,
                    appointment_id=f"B-{n}",
                    primary_clinician_ehr_id=FHIR_USER,
                )
                for n in range(2)
            ]
        )
    assert (
        _raw("connector_visit", "primary_clinician_ehr_id_hash")
        == [lookup_hash(FHIR_USER, purpose=EHR_USER)] * 2
    )
    assert _plain_anywhere() == {}


def test_the_admin_finds_a_clinician_link_by_its_exact_fhir_user(client, staff_user, org_a, rows):
    client.force_login(staff_user)

    found = client.get("/admin/connector/clinicianlink/", {"q": FHIR_USER})
    missed = client.get("/admin/connector/clinicianlink/", {"q": FHIR_USER[:-1]})

    assert found.status_code == 200 and FHIR_USER in found.content.decode()
    assert missed.status_code == 200 and FHIR_USER not in missed.content.decode()
