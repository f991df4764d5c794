"""Sign-in defences (issue 12, item 1): lockout per address and per account with an audit record,
and staff restricted to Microsoft sign-in when ADMIN_PASSWORD_LOGIN is off."""

import pytest
from axes.models import AccessAttempt, AccessFailureLog

from tests.test_production_settings import _start, production_env  # noqa: F401

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "a-strong-pass-phrase"  # staff_user's


@pytest.fixture(autouse=True)
def _small_limit(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.ADMIN_PASSWORD_LOGIN = True


def _admin_login(client, username, password, ip="203.0.113.7"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_the_admin_locks_an_account_after_repeated_wrong_passwords(client, staff_user):
    answers = [_admin_login(client, "support-sam", "wrong").status_code for _ in range(3)]
    locked = _admin_login(client, "support-sam", PASSWORD)

    assert answers == [200, 200, 429]  # the third failure reaches the limit and locks
    assert locked.status_code == 429
    assert "Too many failed sign-ins for this account or from your address" in locked.content.decode()
    assert "Try again in 15 minutes" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # The audit trail: every failure, with the address and account name.
    assert AccessFailureLog.objects.filter(username="support-sam", ip_address="203.0.113.7").count() >= 3
    assert AccessAttempt.objects.filter(username="support-sam").exists()


def test_the_lockout_follows_the_account_to_another_address(client, staff_user):
    for n in range(3):
        _admin_login(client, "support-sam", "wrong", ip=f"198.51.100.{n + 1}")

    assert _admin_login(client, "support-sam", PASSWORD, ip="192.0.2.200").status_code == 429


def test_the_lockout_follows_an_address_across_accounts(client, staff_user):
    for name in ("alice", "bob", "carol"):
        _admin_login(client, name, "wrong", ip="203.0.113.9")

    assert _admin_login(client, "support-sam", PASSWORD, ip="203.0.113.9").status_code == 429
    assert _admin_login(client, "support-sam", PASSWORD, ip="203.0.113.10").status_code == 302


def test_a_right_password_before_the_limit_signs_in_and_clears_the_count(client, staff_user):
    _admin_login(client, "support-sam", "wrong")

    assert _admin_login(client, "support-sam", PASSWORD).status_code == 302
    assert not AccessAttempt.objects.filter(username="support-sam").exists()


def test_with_password_sign_in_off_staff_are_sent_to_microsoft_sign_in(client, staff_user, settings):
    settings.ADMIN_PASSWORD_LOGIN = False

    answer = _admin_login(client, "support-sam", PASSWORD)

    assert answer.status_code == 200
    assert "_auth_user_id" not in client.session
    page = answer.content.decode()
    assert "Password sign-in to the admin is turned off (ADMIN_PASSWORD_LOGIN=false)" in page
    assert "/auth/login/azuread-v2-tenant-oauth2/" in page


def test_the_demo_sign_in_locks_an_address_after_repeated_wrong_names(client, settings, db):
    settings.DEMO_SIGN_IN = True

    for n in range(3):
        client.post("/sign-in/demo/", {"username": f"guess-{n}"}, REMOTE_ADDR="203.0.113.8")
    locked = client.post("/sign-in/demo/", {"username": "demo-admin"}, REMOTE_ADDR="203.0.113.8", follow=True)

    assert "Too many failed sign-ins" in locked.content.decode()
    assert AccessFailureLog.objects.filter(ip_address="203.0.113.8").count() == 3


def test_production_turns_password_sign_in_off_by_default(production_env):  # noqa: F811
    production_env.pop("ADMIN_PASSWORD_LOGIN", None)

    result = _start(
        production_env, "-c", "import django; django.setup(); from django.conf import settings; "
        "print(settings.ADMIN_PASSWORD_LOGIN)"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")
