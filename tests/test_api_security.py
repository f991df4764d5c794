"""Findings of the security audit (issue 12), each kept closed by a test."""

import pytest

from sms.backends import locmem
from sms.models import PhoneNumber
from tenants.scoping import all_tenants
from tests.conftest import ORG_A_TID

BASE = f"/api/v1/tenants/{ORG_A_TID}"


@pytest.fixture
def _locmem_sms(settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    locmem.reset()
    yield
    locmem.reset()


def test_a_read_write_token_requests_a_sending_number_with_no_person_recorded(_locmem_sms, org_a, token_client):
    response = token_client(org_a, "read_write").post(f"{BASE}/sms/numbers/", {"country": "US"}, format="json")

    assert response.status_code == 202, response.content
    with all_tenants():
        number = PhoneNumber.objects.get(pk=response.json()["id"])
    assert number.requested_by is None
