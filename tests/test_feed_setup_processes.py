"""The feed's kept setup stays correct across processes, and its memory is bounded.

A change made by another process (a real subprocess on the same database and
shared cache) is seen by this one within a second; every query-set write path
moves the shared token.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from connector import settings as project_settings
from sms.hl7 import feed_setup as kept
from sms.hl7.feed_setup import feed_setup, feed_tenant
from sms.models import OptOut, SigningCertificate
from tenants.models import Tenant, TenantStatus
from tenants.scoping import all_tenants, tenant_scope
from tenants.setup_changes import current_token
from tests.support.hl7_feed import make_certificate, make_key, pem, ready_endpoint

BASE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def shared_cache(settings):
    """The project's own cache (Redis when REDIS_URL is set, else the database cache), not the tests' locmem."""
    settings.CACHES = project_settings.CACHES
    if "DatabaseCache" in settings.CACHES["default"]["BACKEND"]:
        call_command("createcachetable", verbosity=0)


def _database_url() -> str:
    db = django_settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def _in_another_process(code: str) -> None:
    env = {**os.environ, "DATABASE_URL": _database_url()}
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=BASE, env=env, check=True, timeout=120)


def _within_a_second(condition) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < 1.0, "another process's change was not seen within a second"
        time.sleep(0.02)
    return time.monotonic() - started


def _complete_feed(tenant):
    from sms.services.certificates import certificate_upload

    certificate_upload(tenant=tenant, environment="test", data=pem(make_certificate(make_key())), uploaded_by=None)
    ready_endpoint(tenant, environment="test")
    with tenant_scope(tenant):
        setup = feed_setup(tenant, "test")
        assert setup.complete
        assert feed_setup(tenant, "test").kept  # kept from now on


@pytest.mark.django_db(transaction=True)
def test_an_organization_suspended_in_another_process_is_refused_here_within_a_second(org_a, shared_cache):
    _complete_feed(org_a)
    assert feed_tenant(org_a.microsoft_tenant_id) is not None
    assert feed_tenant(org_a.microsoft_tenant_id) is not None  # kept

    _in_another_process(
        "from tenants.models import Tenant; "
        f"Tenant.objects.filter(pk={org_a.pk}).update(status='{TenantStatus.SUSPENDED}')"
    )
    _within_a_second(lambda: feed_tenant(org_a.microsoft_tenant_id) is None)


@pytest.mark.django_db(transaction=True)
def test_a_certificate_withdrawn_in_another_process_is_refused_here_within_a_second(org_a, shared_cache):
    _complete_feed(org_a)
    with tenant_scope(org_a):
        certificate = SigningCertificate.objects.get(tenant=org_a, active=True)

    _in_another_process(
        "from sms.models import OptOut, SigningCertificate; from tenants.scoping import all_tenants\n"
        "with all_tenants():\n"
        f"    SigningCertificate.objects.filter(pk={certificate.pk}).update(active=False)"
    )

    def refused():
        with tenant_scope(org_a):
            return feed_setup(org_a, "test").certificate is None

    _within_a_second(refused)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "write",
    [
        lambda tenant: Tenant.objects.filter(pk=tenant.pk).update(name="Renamed"),
        lambda tenant: Tenant.objects.filter(pk=tenant.pk).delete(),
        lambda tenant: Tenant.objects.bulk_update([tenant], ["name"]),
        lambda tenant: OptOut.objects.bulk_create(
            [OptOut(tenant=tenant, number_hash="0" * 64, number_last_four="0000")]
        ),
    ],
    ids=["update", "delete", "bulk_update", "bulk_create"],
)
def test_every_query_set_write_path_moves_the_shared_token(org_a, shared_cache, write):
    before = current_token()
    with all_tenants():
        write(org_a)
    assert current_token() != before


@pytest.mark.django_db
def test_a_write_moves_the_token_only_when_it_commits(org_a, shared_cache, django_capture_on_commit_callbacks):
    before = current_token()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        Tenant.objects.filter(pk=org_a.pk).update(name="Renamed")
    assert current_token() == before  # another process must not re-read the old row under a new token
    for callback in callbacks:
        callback()
    assert current_token() != before


@pytest.mark.django_db
def test_nothing_is_kept_when_the_shared_cache_cannot_be_read(org_a, monkeypatch):
    _complete_feed(org_a)
    monkeypatch.setattr(kept, "current_token", lambda: None)
    monkeypatch.setattr(kept, "_token", {"value": None, "checked_at": float("-inf")})
    with tenant_scope(org_a):
        assert not feed_setup(org_a, "test").kept


def test_memory_is_bounded():
    for number in range(kept.MAX_KEPT_ENTRIES + 500):
        kept._keep(kept._tenants, f"tenant-{number}", object())
    assert len(kept._tenants) == kept.MAX_KEPT_ENTRIES
    assert "tenant-0" not in kept._tenants and f"tenant-{kept.MAX_KEPT_ENTRIES + 499}" in kept._tenants
