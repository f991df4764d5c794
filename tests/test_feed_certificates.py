"""The scheduling feed's certificates: refused outside their validity on both transports, warned about before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine
from django.core import mail
from django.urls import reverse

from sms.hl7.ingest import MLLP, TlsClientIdentity, ingest_message
from sms.models import SigningCertificate
from sms.services.certificates import certificate_upload, certificates_warn_expiring
from tenants.scoping import all_tenants
from tests.conftest import signed_in
from tests.support.hl7_feed import fixture, make_certificate, make_key, pem, ready_endpoint, sign

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def upload(tenant, *, not_before: datetime, not_after: datetime, environment: str = "test", endpoint=True):
    key = make_key("p256")
    certificate = make_certificate(key, not_before=not_before, not_after=not_after)
    with time_machine.travel(not_before + timedelta(minutes=1), tick=False):
        row = certificate_upload(
            tenant=tenant, environment=environment, data=pem(certificate), uploaded_by=None
        )
    if endpoint:
        ready_endpoint(tenant, environment=environment)
    return key, row


def post(client, tenant, key, body: bytes):
    return client.post(
        f"/sms/ingest/{tenant.microsoft_tenant_id}/test/",
        data=body,
        content_type="x-application/hl7-v2+er7",
        HTTP_X_HL7_SIGNATURE=sign(body, key),
    )


def test_an_expired_certificate_no_longer_authenticates_over_https(client, org_a):
    key, _ = upload(org_a, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1))
    body = fixture("epic_siu_s12_v251.hl7")

    with time_machine.travel(NOW, tick=False):
        response = post(client, org_a, key, body)

    assert response.status_code == 401
    assert "expired on" in response.content.decode()


def test_a_certificate_not_valid_yet_does_not_authenticate(client, org_a):
    key, _ = upload(org_a, not_before=NOW + timedelta(days=2), not_after=NOW + timedelta(days=400))

    with time_machine.travel(NOW, tick=False):
        response = post(client, org_a, key, fixture("epic_siu_s12_v251.hl7"))

    assert response.status_code == 401
    assert "not valid before" in response.content.decode()


def test_a_certificate_that_expires_during_an_mllp_connection_is_refused_for_the_next_message(org_a):
    _, row = upload(org_a, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(seconds=1))

    with time_machine.travel(NOW, tick=False):
        result = ingest_message(
            tenant=org_a,
            environment="test",
            body=fixture("epic_siu_s12_v251.hl7"),
            signature=None,
            via=MLLP,
            peer=TlsClientIdentity(row.thumbprint_sha256),
        )

    assert result.status_code == 401 and "expired" in result.error


def test_administrators_are_e_mailed_once_30_days_before_a_certificate_expires(
    org_a, org_b, admin_a, admin_b
):
    upload(org_a, not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=20))
    upload(org_b, not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=90))  # not yet

    assert certificates_warn_expiring(now=NOW) == 1
    assert certificates_warn_expiring(now=NOW + timedelta(days=1)) == 0  # once

    [message] = mail.outbox
    assert message.to == [admin_a.email]
    assert "expires on" in message.subject and org_a.name in message.subject
    assert "/portal/setup/sms/#sms-certificates" in message.body
    with all_tenants():
        assert SigningCertificate.objects.get(tenant=org_b).expiry_warned_at is None


def test_the_replacement_certificate_is_warned_about_in_its_turn(org_a, admin_a):
    upload(org_a, not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=10))
    certificates_warn_expiring(now=NOW)
    upload(org_a, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=25), endpoint=False)

    assert certificates_warn_expiring(now=NOW) == 1
    assert len(mail.outbox) == 2


def test_the_daily_schedule_is_set_up():
    from sms.schedules import SCHEDULES

    assert "sms.tasks.signing_certificates_warn_expiring" in {schedule["func"] for schedule in SCHEDULES}


def test_the_portal_says_an_expired_certificate_refuses_every_message(client, org_a, admin_a):
    upload(org_a, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1))

    with time_machine.travel(NOW, tick=False):
        page = signed_in(client, admin_a).get(reverse("portal:sms")).content.decode()

    assert "expired: every message is refused" in page
