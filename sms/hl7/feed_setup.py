"""What the scheduling feed needs to know about an organization's setup, read once and kept briefly.

Every message needs the organization, its active signing certificate for the
environment, the FHIR endpoint its appointments belong to (with that endpoint's
SMS settings and phone number) and the organization's SMS consent. Read for each
message, these five lookups cost more than parsing and storing the message
itself; they change a few times a year. So each worker process keeps what it
read for `HL7_FEED_SETUP_CACHE_SECONDS` (10 s by default; 0 turns keeping off),
under three rules that keep it safe:

- only a complete setup is kept (certificate, ready endpoint, SMS settings with
  an active number, both consents). Anything missing is read again on the next
  message, so finishing the setup in the portal takes effect at once;
- a sender refused against a kept certificate is checked once more against a
  fresh read (see `ingest_message`), so an uploaded replacement works at once;
- any change to these rows (a save, a delete, a query set's `.update()`,
  `.delete()`, `bulk_create()` or `bulk_update()`) forgets everything kept in
  this process at once, and moves a token in the shared cache when it commits
  (`tenants/setup_changes.py`); every process looks at that token at most every
  `TOKEN_CHECK_SECONDS` (0.5 s) and forgets what it kept when the token moved.
  So a suspended organization or a withdrawn certificate is refused by every
  web process and MLLP listener within a second. When the shared cache cannot
  be read nothing is kept;
- memory is bounded: at most `MAX_KEPT_ENTRIES` organizations per store, the
  least recently used forgotten first.

The event types the organization's webhook endpoints want are part of the setup:
an appointment no endpoint wants to hear about costs no query. A new endpoint
hears about appointments from the feed within the same second (the token, above).

Opt-outs are kept the same way, as the set of the organization's opted-out
numbers (keyed hashes), and only to save a query per message: a number found in
the set is checked again in the database (it may have opted back in), and one
not in it is trusted, because nothing relies on that answer to keep a text from
an opted-out number: STOP cancels the texts already scheduled and the dispatcher
checks every text against the opt-outs when it sends.

The TTL stays as a second line: a write made outside the ORM (SQL typed into
psql) reaches every process within it. Sending does not rely on what was kept
here: the dispatcher checks consent, the number and opt-outs again when it sends.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, replace

from cachetools import LRUCache
from django.conf import settings
from django.db.models.signals import post_delete, post_save

from connector.models import EndpointStatus, FhirEndpoint
from connector.webhooks.models import WebhookEndpoint
from sms.models import NumberState, OptOut, PhoneNumber, SigningCertificate, SmsConsent, SmsSettings
from sms.selectors import number_is_opted_out
from tenants.models import Tenant, TenantStatus
from tenants.scoping import all_tenants
from tenants.setup_changes import current_token, on_local_change, setup_changed

DEFAULT_CACHE_SECONDS = 10.0
# Most endpoints an organization's feed is matched against (see `_feed_endpoint`).
MAX_ENDPOINTS = 20
# Beyond this many opted-out numbers an organization's set is not kept: one query per message instead.
MAX_KEPT_OPT_OUTS = 20_000
_TOO_MANY = frozenset({"(too many to keep)"})


@dataclass(frozen=True)
class FeedSetup:
    tenant: Tenant
    certificate: SigningCertificate | None
    endpoint: FhirEndpoint | None  # the endpoint the feed's appointments belong to
    sms_settings: SmsSettings | None  # that endpoint's, with its phone number loaded
    consent: SmsConsent | None
    # The event types the organization's enabled webhook endpoints want: an appointment
    # that no endpoint hears about costs no query to find that out.
    webhook_event_types: frozenset[str] = frozenset()
    kept: bool = False  # True when this came from the process's memory, not the database

    @property
    def complete(self) -> bool:
        number: PhoneNumber | None = self.sms_settings.phone_number if self.sms_settings else None
        return bool(
            self.certificate
            and self.endpoint
            and number is not None
            and number.state == NumberState.ACTIVE
            and self.consent is not None
            and self.consent.complete
        )


_lock = threading.Lock()
# Bounded: a process keeps at most this many organizations' (and setups', opt-out sets') entries,
# the least recently used going first; a deployment with more organizations reads the rest each time.
MAX_KEPT_ENTRIES = 2_000
_tenants: LRUCache = LRUCache(maxsize=MAX_KEPT_ENTRIES)
_setups: LRUCache = LRUCache(maxsize=MAX_KEPT_ENTRIES)
_opt_outs: LRUCache = LRUCache(maxsize=MAX_KEPT_ENTRIES)
# How often this process looks at the shared setup token (tenants/setup_changes.py): a change
# made in another process is seen within this time after it commits.
TOKEN_CHECK_SECONDS = 0.5
_token = {"value": None, "checked_at": float("-inf")}


def _cache_seconds() -> float:
    return float(getattr(settings, "HL7_FEED_SETUP_CACHE_SECONDS", DEFAULT_CACHE_SECONDS))


def _token_is_current() -> bool:
    """Whether what is kept may be used: the shared token has not moved since it was kept.

    Forgets everything when it moved. False when the shared cache cannot be read.
    """
    now = time.monotonic()
    with _lock:
        if now - _token["checked_at"] < TOKEN_CHECK_SECONDS and _token["value"] is not None:
            return True
    token = current_token()  # outside the lock: a round trip to Redis or the database
    with _lock:
        if token is None or token != _token["value"]:
            _forget_locked()
        _token["value"] = token
        _token["checked_at"] = now
    return token is not None


def _kept(store: LRUCache, key):
    seconds = _cache_seconds()
    if seconds <= 0 or not _token_is_current():
        return None
    with _lock:
        entry = store.get(key)
    if entry is None or time.monotonic() - entry[0] >= seconds:
        return None
    return entry[1]


def _keep(store: LRUCache, key, value) -> None:
    if _cache_seconds() > 0:
        with _lock:
            store[key] = (time.monotonic(), value)


def _forget_locked() -> None:
    _tenants.clear()
    _setups.clear()
    _opt_outs.clear()


def feed_setup_forget() -> None:
    """Drop everything kept (a setup row changed in this process; tests)."""
    with _lock:
        _forget_locked()


on_local_change(feed_setup_forget)


def feed_tenant(microsoft_tenant_id: str) -> Tenant | None:
    """The enabled organization with this Microsoft 365 tenant ID (any spelling of the GUID), or None."""
    try:
        normalized = str(uuid.UUID(microsoft_tenant_id))
    except ValueError:
        return None
    tenant = _kept(_tenants, normalized)
    if tenant is None:
        with all_tenants():
            tenant = Tenant.objects.filter(
                microsoft_tenant_id=normalized, status=TenantStatus.ENABLED
            ).first()
        if tenant is not None:
            _keep(_tenants, normalized, tenant)
    return tenant


def feed_setup(tenant: Tenant, environment: str, *, fresh: bool = False) -> FeedSetup:
    """The setup the feed of `tenant` and `environment` works with; call inside the tenant's scope."""
    key = (tenant.pk, environment)
    if not fresh:
        kept = _kept(_setups, key)
        if kept is not None:
            return kept
    endpoint = _feed_endpoint(tenant, environment)
    sms_settings = getattr(endpoint, "sms_settings", None) if endpoint else None
    setup = FeedSetup(
        tenant=tenant,
        certificate=SigningCertificate.objects.filter(
            tenant=tenant, environment=environment, active=True
        ).first(),
        endpoint=endpoint,
        sms_settings=sms_settings,
        consent=SmsConsent.objects.filter(tenant=tenant).first(),
        webhook_event_types=_webhook_event_types(tenant),
    )
    if setup.complete:
        _keep(_setups, key, replace(setup, kept=True))
    return setup


def feed_number_opted_out(tenant: Tenant, hashed_numbers: tuple[str, ...]) -> bool:
    """Whether the number (its keyed hashes, `number_hashes`) opted out of the organization's texts.

    Call inside the tenant's scope.
    """
    kept = _kept(_opt_outs, tenant.pk)
    if kept is None:
        hashes = list(
            OptOut.objects.filter(tenant=tenant, active=True).values_list("number_hash", flat=True)[
                : MAX_KEPT_OPT_OUTS + 1
            ]
        )
        kept = _TOO_MANY if len(hashes) > MAX_KEPT_OPT_OUTS else frozenset(hashes)
        _keep(_opt_outs, tenant.pk, kept)
    if kept is _TOO_MANY or not kept.isdisjoint(hashed_numbers):
        return number_is_opted_out(tenant, hashed_numbers)  # read fresh: it may have opted back in
    return False


def _webhook_event_types(tenant: Tenant) -> frozenset[str]:
    wanted: set[str] = set()
    for event_types in WebhookEndpoint.objects.filter(tenant=tenant, enabled=True).values_list(
        "event_types", flat=True
    ):
        wanted.update(event_types or ())
    return frozenset(wanted)


def _feed_endpoint(tenant: Tenant, environment: str) -> FhirEndpoint | None:
    """The first usable endpoint of the environment with SMS settings, else the first usable one."""
    usable = list(
        FhirEndpoint.objects.filter(
            tenant=tenant,
            environment=environment,
            status__in=[EndpointStatus.APPROVED, EndpointStatus.VALIDATED],
        )
        .select_related("sms_settings__phone_number")  # one query: the reverse one-to-one joins
        .order_by("pk")[:MAX_ENDPOINTS]
    )
    for endpoint in usable:
        endpoint.tenant = tenant  # already loaded; saves a query wherever the endpoint's tenant is read
        if getattr(endpoint, "sms_settings", None) is not None:
            return endpoint
    return usable[0] if usable else None


# Saves and deletes (the query sets' own write paths move the token through SetupQuerySet).
# Webhook endpoints: their saves only (made, enabled, event types changed, deleted). The
# sender's `.update()` of their failure counts must not flush every process's setup; when
# it disables an endpoint, what is kept still names its event types, which costs only the
# query that finds no endpoint to deliver to.
for _model in (
    Tenant,
    SigningCertificate,
    FhirEndpoint,
    SmsSettings,
    PhoneNumber,
    SmsConsent,
    OptOut,
    WebhookEndpoint,
):
    post_save.connect(setup_changed, sender=_model, dispatch_uid=f"feed-setup-{_model.__name__}-saved")
    post_delete.connect(setup_changed, sender=_model, dispatch_uid=f"feed-setup-{_model.__name__}-deleted")
