"""Sessions end after 30 minutes without a request and 12 hours after sign-in."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from tenants.models import Role
from tests.conftest import ORG_A_TID, make_member, signed_in


@pytest.fixture
def clock():
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


def _visit(client):
    return client.get("/portal/")


def _is_signed_out(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith("/sign-in/")


def test_a_session_survives_29_minutes_of_idleness(client, admin_a, clock):
    signed_in(client, admin_a)
    assert _visit(client).status_code == 200

    clock.shift(timedelta(minutes=29))

    assert _visit(client).status_code == 200


def test_a_session_ends_after_30_minutes_of_idleness(client, admin_a, clock):
    signed_in(client, admin_a)
    assert _visit(client).status_code == 200

    clock.shift(timedelta(minutes=30, seconds=1))
    response = _visit(client)

    assert _is_signed_out(response)
    assert "_auth_user_id" not in client.session
    # The session is over for good: coming back sooner does not revive it.
    assert _is_signed_out(_visit(client))


def test_the_sign_in_page_says_the_session_ended(client, admin_a, clock):
    signed_in(client, admin_a)
    _visit(client)
    clock.shift(timedelta(minutes=31))

    response = client.get("/portal/", follow=True)

    assert "Your session ended; sign in again." in response.content.decode()


def test_activity_keeps_a_session_alive_past_30_minutes(client, admin_a, clock):
    signed_in(client, admin_a)
    for _ in range(6):
        assert _visit(client).status_code == 200
        clock.shift(timedelta(minutes=20))

    assert _visit(client).status_code == 200


def test_a_session_ends_12_hours_after_sign_in_however_active(client, admin_a, clock):
    signed_in(client, admin_a)
    for _ in range(35):  # a request every 20 minutes: at 0, 20, ... 680 minutes
        assert _visit(client).status_code == 200
        clock.shift(timedelta(minutes=20))
    assert _visit(client).status_code == 200  # 700 minutes
    clock.shift(timedelta(minutes=19, seconds=59))
    assert _visit(client).status_code == 200  # 11h59m59s: not yet

    clock.shift(timedelta(seconds=2))  # 12h00m01s, only 2 seconds idle
    response = _visit(client)

    assert _is_signed_out(response)
    assert "_auth_user_id" not in client.session


def test_the_api_refuses_an_expired_session_too(client, admin_a, clock):
    signed_in(client, admin_a)
    assert client.get(f"/api/v1/tenants/{ORG_A_TID}/").status_code == 200

    clock.shift(timedelta(minutes=31))

    assert client.get(f"/api/v1/tenants/{ORG_A_TID}/").status_code in (401, 403)
    assert "_auth_user_id" not in client.session


def test_signing_in_again_after_expiry_starts_a_fresh_session(client, org_a, clock, settings):
    settings.DEMO_SIGN_IN = True
    make_member(org_a, "demo-admin", Role.ADMINISTRATOR)
    client.post("/sign-in/demo/", {"username": "demo-admin"})
    assert _visit(client).status_code == 200
    clock.shift(timedelta(minutes=31))
    assert _is_signed_out(_visit(client))

    client.post("/sign-in/demo/", {"username": "demo-admin"})

    assert _visit(client).status_code == 200
    clock.shift(timedelta(minutes=29))
    assert _visit(client).status_code == 200
