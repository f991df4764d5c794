"""Fixtures shared by the whole suite.

The chain is tenant -> user -> client, and there are always two organizations:
`org_a` (Epic) and `org_b` (Oracle Health). Every isolation test checks that a
member of A can neither see nor change B's rows.
"""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model
from django_q.conf import Conf
from rest_framework.test import APIClient

from tenants.models import DataRegion, EhrVendor, Membership, Role, Tenant, TenantStatus
from tenants.scoping import all_tenants, tenant_scope
from tenants.services import api_token_create

ORG_A_TID = "11111111-1111-4111-8111-111111111111"
ORG_B_TID = "22222222-2222-4222-8222-222222222222"


@pytest.fixture(autouse=True)
def _tasks_run_inline(request):
    """django-q2 runs tasks in-process, unless a test is marked `tasks` (real broker)."""
    previous = Conf.SYNC
    Conf.SYNC = "tasks" not in request.keywords
    yield
    Conf.SYNC = previous


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def unscoped():
    """For test set-up and assertions that look across organizations."""
    with all_tenants():
        yield


def _make_tenant(name: str, tid: str, vendor: str, region: str) -> Tenant:
    return Tenant.objects.create(
        name=name, microsoft_tenant_id=tid, ehr_vendor=vendor, data_region=region, status=TenantStatus.ENABLED
    )


@pytest.fixture
def org_a(db) -> Tenant:
    return _make_tenant("Org A Health", ORG_A_TID, EhrVendor.EPIC, DataRegion.AMERICAS)


@pytest.fixture
def org_b(db) -> Tenant:
    return _make_tenant("Org B Clinics", ORG_B_TID, EhrVendor.ORACLE_HEALTH, DataRegion.EUROPE)


def make_member(tenant: Tenant, username: str, role: str, ehr_username: str = ""):
    user = get_user_model().objects.create_user(username=username, email=f"{username}@example.org")
    with tenant_scope(tenant):
        Membership.objects.create(tenant=tenant, user=user, role=role, ehr_username=ehr_username)
    return user


@pytest.fixture
def admin_a(org_a):
    return make_member(org_a, "alice-admin", Role.ADMINISTRATOR)


@pytest.fixture
def approver_a(org_a):
    return make_member(org_a, "arthur-approver", Role.EHR_APPROVER, ehr_username="ANALYST1")


@pytest.fixture
def viewer_a(org_a):
    return make_member(org_a, "vera-viewer", Role.VIEWER)


@pytest.fixture
def admin_b(org_b):
    return make_member(org_b, "bob-admin", Role.ADMINISTRATOR)


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user(
        username="support-sam", password="a-strong-pass-phrase", is_staff=True, is_superuser=True
    )


def signed_in(client, user):
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def api_as():
    """api_as(user) -> an APIClient signed in as that user."""

    def make(user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user=None)
        client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        return client

    return make


@pytest.fixture
def token_client():
    """token_client(tenant, scope) -> an APIClient using a fresh API token of that tenant."""

    def make(tenant: Tenant, scope: str = "read") -> APIClient:
        issued = api_token_create(tenant=tenant, name="test token", scope=scope, created_by=None)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.raw}")
        client.issued = issued
        return client

    return make


# --- added with the foundation suite -------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    """Every test gets an empty in-process cache.

    Rate limits and throttles count in the cache. The database cache would be
    rolled back with each test, but a Redis cache (REDIS_URL set) would carry
    counts from test to test; and clearing it would wipe whatever else that
    Redis database holds.
    """
    import uuid

    from connector.kept_documents import forget_all

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"test-{uuid.uuid4().hex}",
        }
    }
    forget_all()  # the EHR documents each process keeps on top of the cache (connector/kept_documents.py)


@pytest.fixture
def drain_task_queue():
    """drain_task_queue() -> results: run every task waiting on the REAL django-q2 broker.

    For tests marked `tasks` (tasks are queued, not run inline): takes each
    package off the configured broker (the ORM broker, or Redis when REDIS_URL is
    set), checks its signature, runs its function in this process and
    acknowledges it, as a cluster worker would. Returns a list of
    `(func path, args, result)`. Tasks queued by earlier runs are purged first.
    """
    import pydoc

    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    broker = get_broker()
    broker.purge_queue()

    def drain() -> list[tuple[str, tuple, object]]:
        done = []
        # queue_size() first: dequeue() on an empty queue blocks (Redis) or sleeps (ORM).
        while broker.queue_size():
            for task_id, payload in broker.dequeue() or []:
                task = SignedPackage.loads(payload)
                func = task["func"] if callable(task["func"]) else pydoc.locate(task["func"])
                assert func is not None, f"task function {task['func']} cannot be imported"
                result = func(*task["args"], **task["kwargs"])
                broker.acknowledge(task_id)
                done.append((task["func"], tuple(task["args"]), result))
        return done

    yield drain
    broker.purge_queue()


CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright, one launch for the whole run."""
    if not os.path.exists(CHROMIUM_PATH):
        pytest.skip(f"no Chromium at {CHROMIUM_PATH} (apt-get install chromium)")
    from django.db import connections
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop running on this thread from here
    # to the end of the run, so Django would take every ORM call made by the tests
    # (and the live server's thread set-up) for one made inside async code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    # Django keeps database connections per context; once Playwright's loop runs,
    # the tests get new ones, and a connection opened before would never be closed
    # (PostgreSQL then refuses to drop the test database at the end of the run).
    connections.close_all()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
        connections.close_all()  # the ones opened while the loop ran, for the same reason
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) and page for one test; fails it on a CSP violation."""
    from tests.support.browser import close_contexts, open_context

    context = open_context(browser)
    context.set_default_timeout(10_000)
    new_page = context.new_page()
    yield new_page
    close_contexts([context])


# --- Microsoft Entra ID, faked at the HTTP edge -----------------------------------------

ENTRA_CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
ENTRA_AUTHORITY = "https://login.microsoftonline.com"


class FakeEntra:
    """Microsoft's sign-in endpoints, answered by `responses` with an id_token we sign.

    Nothing of social-auth is patched: the real pipeline fetches the OpenID
    configuration and the signing keys, exchanges the code at the token endpoint
    and verifies the id_token (signature, issuer with the tenant ID, audience,
    lifetime) exactly as it does against Microsoft.
    """

    kid = "test-signing-key"
    openid_configuration_url = (
        f"{ENTRA_AUTHORITY}/organizations/v2.0/.well-known/openid-configuration?appid={ENTRA_CLIENT_ID}"
    )
    jwks_url = f"{ENTRA_AUTHORITY}/organizations/discovery/v2.0/keys?appid={ENTRA_CLIENT_ID}"
    token_url = f"{ENTRA_AUTHORITY}/organizations/oauth2/v2.0/token"
    issuer_template = f"{ENTRA_AUTHORITY}/{{tenantid}}/v2.0"

    def __init__(self, mock) -> None:
        import json

        from cryptography.hazmat.primitives.asymmetric import rsa
        from jwt.algorithms import RSAAlgorithm

        self.mock = mock
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        public_jwk.update({"kid": self.kid, "use": "sig", "issuer": self.issuer_template})
        mock.get(
            self.openid_configuration_url,
            json={
                "issuer": self.issuer_template,
                "authorization_endpoint": f"{ENTRA_AUTHORITY}/organizations/oauth2/v2.0/authorize",
                "token_endpoint": self.token_url,
                "jwks_uri": self.jwks_url,
                "id_token_signing_alg_values_supported": ["RS256"],
            },
        )
        mock.get(self.jwks_url, json={"keys": [public_jwk]})

    def id_token(self, *, tid: str, sub: str, email: str, **overrides) -> str:
        import time

        import jwt

        now = int(time.time())
        claims = {
            "aud": ENTRA_CLIENT_ID,
            "iss": self.issuer_template.replace("{tenantid}", tid),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "tid": tid,
            "sub": sub,
            "oid": f"oid-{sub}",
            "preferred_username": email,
            "email": email,
            "name": email.split("@")[0],
            **overrides,
        }
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})

    def sign_in(
        self, client, *, tid: str, sub: str = "entra-subject-1", email: str = "pat@org.example", **claims
    ):
        """Drive begin (a POST, as the sign-in page does) and complete; returns the callback response."""
        from urllib.parse import parse_qs, urlsplit

        begin = client.post("/auth/login/azuread-v2-tenant-oauth2/")
        assert begin.status_code == 302, begin
        authorize = urlsplit(begin["Location"])
        assert authorize.netloc == "login.microsoftonline.com"
        query = parse_qs(authorize.query)
        assert query["client_id"] == [ENTRA_CLIENT_ID]
        state = query["state"][0]
        self.mock.post(
            self.token_url,
            json={
                "token_type": "Bearer",
                "expires_in": 3599,
                "access_token": "opaque-access-token",
                "id_token": self.id_token(tid=tid, sub=sub, email=email, **claims),
            },
        )
        return client.get(
            "/auth/complete/azuread-v2-tenant-oauth2/", {"code": "auth-code-from-entra", "state": state}
        )


@pytest.fixture
def entra(settings):
    """A fake Microsoft Entra ID; `entra.sign_in(client, tid=...)` signs in through social-auth."""
    import responses
    from social_core.backends.azuread import AzureADOAuth2

    settings.SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_KEY = ENTRA_CLIENT_ID
    settings.SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_SECRET = "test-client-secret"
    settings.ENTRA_CONFIGURED = True
    # social-auth caches the discovery document and keys for a day, per process.
    AzureADOAuth2.get_openid_configuration.invalidate()
    AzureADOAuth2.get_jwks_keys_for_uri.invalidate()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeEntra(mock)
    AzureADOAuth2.get_openid_configuration.invalidate()
    AzureADOAuth2.get_jwks_keys_for_uri.invalidate()


# --- Real local HTTP servers for outside systems (tests/support/local_server.py) ---------


@pytest.fixture
def local_server_factory():
    """local_server_factory(tls=None) -> a started LocalServer; all are stopped after the test."""
    import ssl

    from tests.support.local_server import LocalServer

    started: list[LocalServer] = []

    def start(tls: ssl.SSLContext | None = None) -> LocalServer:
        server = LocalServer(tls).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__()


@pytest.fixture
def local_server(local_server_factory):
    """A started plain-HTTP LocalServer on 127.0.0.1; add routes with `local_server.add(path, ...)`."""
    return local_server_factory()


# --- field encryption ------------------------------------------------------------------

TEST_FIELD_ENCRYPTION_KEY = "Q2xUR0ZqYnRfdGVzdC1vbmx5LWtleS0zMi1ieXRlcyE="


@pytest.fixture(autouse=True)
def _field_encryption_key(settings):
    """A fixed Fernet key: the test runner forces DEBUG off, and connector/encryption.py
    then refuses to derive a development key from SECRET_KEY."""
    settings.FIELD_ENCRYPTION_KEYS = [TEST_FIELD_ENCRYPTION_KEY]


@pytest.fixture(scope="session")
def _smart_signing_key_file(tmp_path_factory) -> str:
    from connector.signing_keys import generate_private_key_pem

    path = tmp_path_factory.mktemp("keys") / "smart-signing-key.pem"
    path.write_bytes(generate_private_key_pem())
    return str(path)


@pytest.fixture(autouse=True)
def _smart_signing_key(settings, _smart_signing_key_file):
    """pytest-django runs with DEBUG off, so the installation key comes from a file, as in production."""
    settings.SMART_SIGNING_KEY_FILES = [_smart_signing_key_file]


@pytest.fixture(autouse=True)
def _fresh_meeting_outbox():
    """Every test starts with an empty locmem meeting outbox, as Django does for mail.outbox."""
    from connector.meetings import locmem

    locmem.reset()
    yield
    locmem.reset()


@pytest.fixture(autouse=True)
def _fresh_sms_outbox():
    """Empty the in-memory SMS backend around every test, like Django's mail.outbox."""
    from sms.backends import locmem as sms_locmem

    sms_locmem.reset()
    yield
    sms_locmem.reset()


@pytest.fixture(autouse=True)
def _forget_feed_setup():
    """The scheduling feed keeps each organization's setup in memory for a few seconds: not across tests."""
    from sms.hl7.feed_setup import feed_setup_forget

    feed_setup_forget()
    yield
    feed_setup_forget()


# --- the third-party SMART on FHIR peer (../shared/peers) ------------------------------


@pytest.fixture(scope="session")
def smart_peer():
    """smart-launcher-v2 + Medplum, running on 127.0.0.1 (see tests/support/smart_peer.py).

    Skipped locally when it cannot start; in CI (CI=true) that is a failure instead.
    """
    from tests.support.smart_peer import PeerUnavailable, ensure_running, peer_from_environment

    peer = peer_from_environment()
    try:
        ensure_running(peer)
    except PeerUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"the SMART peer is required in CI: {error}")
        pytest.skip(f"the SMART peer is not available: {error}")
    return peer


def microsoft_user(tenant: Tenant, username: str, email: str = ""):
    """A user who has signed in once with a Microsoft account of `tenant`'s own Microsoft 365 tenant."""
    from social_django.models import UserSocialAuth

    user = get_user_model().objects.create_user(username=username, email=email or f"{username}@example.org")
    UserSocialAuth.objects.create(
        user=user,
        provider="azuread-v2-tenant-oauth2",
        uid=f"entra-sub-{username}",
        extra_data={"tid": tenant.microsoft_tenant_id, "oid": f"oid-{username}"},
    )
    return user
