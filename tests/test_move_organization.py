"""Moving an organization between regions (tenants/moving.py, manage.py move_organization).

One test database stands in for both regions here: the export is taken, the source rows are
deleted by `finish` (the other region, a real local server, answers that it hosts the
organization), and the import then brings every row back with new keys. What must hold: the
same values (encrypted fields included), foreign keys pointing at the right new rows, audit
history kept, nothing of another organization touched, and every refusal explained.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from connector.models import FhirEndpoint, IntegrationRecord, Visit, VisitState
from sms.models import Appointment, OutboundMessage
from sms.services.appointments import appointment_apply
from tenants.models import Membership, Tenant, TenantStatus
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import ORG_A_TID, ORG_B_TID
from tests.support.sms import siu, sms_ready_endpoint
from tests.test_regions import SECRET
from tests.test_visit_events import make_visit

pytestmark = pytest.mark.django_db


@pytest.fixture
def europe_hosts_org_a(settings, local_server):
    from tests.support.local_server import Route

    def lookup(seen):
        hosted = seen.query().get("tenant_id") == ORG_A_TID
        return Route(status=200 if hosted else 404, body={"hosted": hosted, "region": "europe"})

    local_server.add("/internal/regions/lookup", lookup)
    settings.CONNECTOR_REGION = "americas"
    settings.PUBLIC_BASE_URL = "https://us.connector.example.org"
    settings.CONNECTOR_REGIONS_TEXT = f"americas=https://us.connector.example.org\neurope={local_server.base}"
    settings.REGION_LOOKUP_SECRET = SECRET
    return local_server


@pytest.fixture
def populated(org_a, org_b, admin_a, admin_b, settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    endpoint = sms_ready_endpoint(org_a)
    with tenant_scope(org_a):
        appointment_apply(endpoint=endpoint, message=siu(start=timezone.now() + timedelta(days=2)))
    visit = make_visit(org_a, appointment="A-77", meeting_id="m-77")
    visit.state = VisitState.COMPLETED
    visit.save(update_fields=["state"])
    make_visit(org_b, appointment="B-1")
    org_a.status = TenantStatus.SUSPENDED
    org_a.save()
    return org_a


def _snapshot(tid: str) -> dict:
    with all_tenants():
        tenant = Tenant.objects.get(microsoft_tenant_id=tid)
        appointment = Appointment.objects.get(tenant=tenant)
        visit = Visit.objects.select_related("endpoint", "meeting").get(tenant=tenant, appointment_id="A-77")
        return {
            "members": sorted(Membership.objects.filter(tenant=tenant).values_list("user__username", "role")),
            "endpoints": sorted(FhirEndpoint.objects.filter(tenant=tenant).values_list("base_url", "status")),
            "phone": appointment.phone,
            "texts": sorted(
                OutboundMessage.objects.filter(appointment=appointment).values_list(
                    "kind", "send_at", "state"
                )
            ),
            "visit": (visit.public_id, visit.endpoint.base_url, visit.meeting.meeting_id, visit.created_at),
            "history": tenant.history.count(),
        }


def test_export_finish_and_import_bring_back_every_value_with_new_keys(
    populated, europe_hosts_org_a, tmp_path, unscoped
):
    before = _snapshot(ORG_A_TID)
    old_visit_pk = Visit.objects.get(appointment_id="A-77").pk
    org_b_visits = list(
        Visit.objects.filter(tenant__microsoft_tenant_id=ORG_B_TID).values_list("pk", flat=True)
    )
    out = tmp_path / "org-a.move"

    call_command("move_organization", "export", ORG_A_TID, "--out", str(out))
    assert b"Org A Health" not in out.read_bytes()  # encrypted
    assert before["phone"].encode() not in out.read_bytes()
    assert (Path(f"{out}.key").stat().st_mode & 0o777) == 0o600

    call_command("move_organization", "finish", ORG_A_TID, "--export", str(out))
    assert not Tenant.objects.filter(microsoft_tenant_id=ORG_A_TID).exists()
    assert not Visit.objects.filter(appointment_id="A-77").exists()
    assert not Appointment.objects.filter(tenant__microsoft_tenant_id=ORG_A_TID).exists()
    assert list(Visit.objects.filter(tenant__microsoft_tenant_id=ORG_B_TID).values_list("pk", flat=True)) == (
        org_b_visits
    )

    Visit.objects.create(  # the "target region" has its own rows, so keys must be remapped
        tenant=Tenant.objects.get(microsoft_tenant_id=ORG_B_TID),
        endpoint=FhirEndpoint.objects.get(tenant__microsoft_tenant_id=ORG_B_TID),
        appointment_id="B-2",
    )
    call_command("move_organization", "import", str(out))
    after = _snapshot(ORG_A_TID)
    assert after == before
    assert Visit.objects.get(appointment_id="A-77").pk != old_visit_pk
    assert Tenant.objects.get(microsoft_tenant_id=ORG_A_TID).status == TenantStatus.SUSPENDED
    # The records are produced again with this region's addresses, for the EHR team to update.
    launch_urls = (
        IntegrationRecord.objects.filter(tenant__microsoft_tenant_id=ORG_A_TID)
        .exclude(launch_url="")
        .values_list("launch_url", flat=True)
    )
    assert launch_urls and all(url.startswith("https://us.connector.example.org/") for url in launch_urls)


def test_an_organization_that_is_not_suspended_is_not_exported(org_a, tmp_path):
    with pytest.raises(CommandError, match="Suspend Org A Health first"):
        call_command("move_organization", "export", ORG_A_TID, "--out", str(tmp_path / "x.move"))
    assert not (tmp_path / "x.move").exists()


def test_a_visit_in_progress_blocks_the_move(populated, tmp_path, unscoped):
    Visit.objects.filter(appointment_id="A-77").update(state=VisitState.IN_PROGRESS)
    with pytest.raises(CommandError, match="1 visit\\(s\\) of Org A Health are in progress"):
        call_command("move_organization", "export", ORG_A_TID, "--out", str(tmp_path / "x.move"))


def test_finish_deletes_nothing_until_another_region_hosts_the_organization(
    populated, europe_hosts_org_a, settings, tmp_path, unscoped
):
    out = tmp_path / "org-a.move"
    call_command("move_organization", "export", ORG_A_TID, "--out", str(out))
    europe_hosts_org_a.add("/internal/regions/lookup", status=404, body={"hosted": False})
    with pytest.raises(CommandError, match="No other region answers that it hosts this organization"):
        call_command("move_organization", "finish", ORG_A_TID, "--export", str(out))
    assert Tenant.objects.filter(microsoft_tenant_id=ORG_A_TID).exists()


def test_finish_refuses_when_the_rows_changed_since_the_export(
    populated, europe_hosts_org_a, tmp_path, unscoped
):
    out = tmp_path / "org-a.move"
    call_command("move_organization", "export", ORG_A_TID, "--out", str(out))
    Visit.objects.filter(appointment_id="A-77").update(department_id="changed-after-export")
    with pytest.raises(CommandError, match="changed since the export"):
        call_command("move_organization", "finish", ORG_A_TID, "--export", str(out))
    assert Visit.objects.filter(appointment_id="A-77").exists()


def test_import_refuses_an_organization_the_region_already_has(populated, tmp_path):
    out = tmp_path / "org-a.move"
    call_command("move_organization", "export", ORG_A_TID, "--out", str(out))
    with pytest.raises(CommandError, match="already has an organization with tenant ID"):
        call_command("move_organization", "import", str(out))


def test_a_wrong_key_or_missing_file_says_what_to_give(populated, tmp_path):
    out = tmp_path / "org-a.move"
    call_command("move_organization", "export", ORG_A_TID, "--out", str(out))
    Path(f"{out}.key").write_text("bm90LWEta2V5LWF0LWFsbC1qdXN0LXRlc3Qtd29yZHMxMjM0NTY3ODkwMTI=")
    with pytest.raises(CommandError, match="cannot be read with this key"):
        call_command("move_organization", "import", str(out))
    with pytest.raises(CommandError, match="must both exist"):
        call_command("move_organization", "import", str(tmp_path / "missing.move"))


def test_encrypted_ehr_user_ids_move_and_are_hashed_again_with_the_target_regions_key(
    populated, europe_hosts_org_a, settings, tmp_path, unscoped
):
    from connector.lookup_hash import EHR_USER, lookup_hash
    from connector.models import ClinicianLink
    from connector.services.launch import clinician_link_find

    fhir_user = "https://ehr.example.org/fhir/Practitioner/dr-moving"
    admin = Membership.objects.get(tenant=populated, role="administrator").user
    ClinicianLink.objects.create(tenant=populated, environment="test", fhir_user=fhir_user, user=admin)
    Visit.objects.filter(appointment_id="A-77").update(primary_clinician_ehr_id=fhir_user)  # encrypts
    settings.PHONE_HASH_KEY = ["source-region-key-" + "s" * 32]
    call_command("rehash_phone_numbers", stdout=io.StringIO())
    out = tmp_path / "org-a.move"
    call_command("move_organization", "export", ORG_A_TID, "--out", str(out))
    assert fhir_user.encode() not in out.read_bytes()
    call_command("move_organization", "finish", ORG_A_TID, "--export", str(out))

    settings.PHONE_HASH_KEY = ["target-region-key-" + "t" * 32]  # another region, another key
    call_command("move_organization", "import", str(out))

    tenant = Tenant.objects.get(microsoft_tenant_id=ORG_A_TID)
    with tenant_scope(tenant):
        link = clinician_link_find(environment="test", fhir_user=fhir_user)
        assert link is not None and link.user.username == admin.username
        assert link.fhir_user_hash == lookup_hash(fhir_user, purpose=EHR_USER)
        assert Visit.objects.get(appointment_id="A-77").primary_clinician_ehr_id == fhir_user
