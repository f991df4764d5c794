"""The dispatcher: claims due texts atomically, renders them, sends them through the backend.

One text at a time: claim, commit, call, record. A text is claimed
(scheduled -> sending, with a lease) by one dispatcher in its own committed
transaction (PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, then a conditional
UPDATE), so two dispatchers never take the same row; the provider is called
with no transaction open; the outcome is recorded in a second commit, only
while the claim is still ours. A delivery callback that comes before that
record waits as a PendingDeliveryReport and is applied by it.

A dispatcher killed after claiming leaves the row in `sending`; when its lease
runs out the sweeper reconciles it with the provider's message history
(`sms.services.recovery`): found means sent, not found means due again, and a
provider without such an API leaves it "outcome unknown", never resent.
Temporary provider errors go back to `scheduled` with backoff; 429s pause the
number for Retry-After; permanent errors stop. Texts beyond the organization's
cap per patient number are held back (`sms.services.caps`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from sms.backends import get_sms_backend
from sms.backends.base import SmsError
from sms.models import MessageKind, MessageState, OptOut, OutboundMessage, SmsSettings
from sms.phones import number_hash, number_hashes, phone_hash_key_id, region_of
from sms.selectors import number_is_opted_out, sending_blocker
from sms.services.caps import patient_cap_reason
from sms.services.links import short_join_link
from sms.texts import patient_date, patient_time, render, template_for
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
FIRST_BACKOFF = timedelta(seconds=30)
LEASE = timedelta(minutes=5)
HOLD_RETRY = timedelta(minutes=30)


@dataclass
class DispatchResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    held: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def lease_length() -> timedelta:
    """How long a claimed text stays "sending" before the sweeper reconciles it.

    Longer than the task timeout: django-q2 kills a task at its timeout, so
    when a lease ends the dispatcher that took it is certainly gone.
    """
    timeout = int(getattr(settings, "Q_CLUSTER", {}).get("timeout", 120))
    shortest = timedelta(seconds=getattr(settings, "SMS_SEND_LEASE_SECONDS", LEASE.total_seconds()))
    return max(shortest, timedelta(seconds=2 * timeout))


def claiming_budget() -> float:
    """Seconds a dispatch run may keep claiming: half the task timeout, so it ends well before it."""
    timeout = int(getattr(settings, "Q_CLUSTER", {}).get("timeout", 120))
    return float(getattr(settings, "SMS_DISPATCH_BUDGET_SECONDS", timeout / 2))


def _claim_one() -> OutboundMessage | None:
    """Claim the next due text (scheduled -> sending, with a lease) in its own committed transaction."""
    while True:
        now = timezone.now()
        with transaction.atomic():
            due = OutboundMessage.objects.filter(state=MessageState.SCHEDULED, send_at__lte=now).order_by(
                "send_at", "pk"
            )
            if connection.features.has_select_for_update_skip_locked:
                due = due.select_for_update(skip_locked=True)
            pk = due.values_list("pk", flat=True).first()
            if pk is None:
                return None
            # The state condition again: on databases without row locks the UPDATE decides.
            claimed = OutboundMessage.objects.filter(pk=pk, state=MessageState.SCHEDULED).update(
                state=MessageState.SENDING, lease_until=now + lease_length(), attempts=F("attempts") + 1
            )
        if claimed:
            return (  # the same row, with what sending needs (the lease is now set)
                OutboundMessage.objects.select_related("tenant", "phone_number", "appointment__endpoint")
                .filter(pk=pk)
                .first()
            )
        # Another dispatcher took it between our read and our update: take the next one.


def _rate_per_number() -> float:
    return float(getattr(settings, "SMS_RATE_PER_NUMBER", 1.0))


class Pacer:
    """Paces sending per number across every dispatcher, with few cache round trips.

    At `rate` texts a second, time is cut into windows of max(1, 1/rate)
    seconds, each allowing max(1, rate * window) sends, counted in the shared
    cache. A dispatcher reserves its sends in chunks (one cache increment per
    chunk, not per text); a reserved but unused slot is simply lost, which errs
    on the slow side. A number paused after a 429 raises _Paused.
    """

    CHUNK = 100

    def __init__(self) -> None:
        self.rate = max(_rate_per_number(), 0.001)
        self.window = max(1.0, 1.0 / self.rate)
        self.allowance = max(1, int(self.rate * self.window))
        self._reserved: dict[int, tuple[int, int]] = {}  # number -> (window index, slots left)

    def take(self, number_pk: int) -> None:
        while True:
            now = time.time()
            index = int(now / self.window)
            reserved_index, left = self._reserved.get(number_pk, (-1, 0))
            if reserved_index == index and left > 0:
                self._reserved[number_pk] = (index, left - 1)
                return
            paused_until = cache.get(f"sms-pause:{number_pk}")
            if paused_until and paused_until > now:
                raise _Paused(paused_until - now)
            want = min(self.allowance, self.CHUNK)
            key = f"sms-rate:{number_pk}:{index}"
            cache.add(key, 0, timeout=int(self.window) + 5)
            try:
                used = cache.incr(key, want)
            except ValueError:  # expired between add and incr
                continue
            granted = max(0, min(want, self.allowance - (used - want)))
            if granted:
                self._reserved[number_pk] = (index, granted - 1)
                return
            time.sleep(max((index + 1) * self.window - now, 0.01))


class _Paused(Exception):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _join_link(message: OutboundMessage) -> str:
    """The short link (/j/<code>): one GSM-7 segment for the default texts (sms/services/links.py)."""
    return short_join_link(message.appointment)


def render_body(message: OutboundMessage, settings_row: SmsSettings | None) -> str:
    if message.body:
        return message.body  # pre-rendered (guest invites, HELP and opt-out answers)
    appointment = message.appointment
    language = appointment.language or (settings_row.default_language if settings_row else "en")
    templates = settings_row.templates if settings_row else {}
    # The appointment's zone is its department's (the endpoint's): the patient reads local time.
    zone = _zone(appointment.time_zone)
    values = {
        "organization": message.tenant.name,
        "date": patient_date(appointment.start, zone, language),
        "time": patient_time(appointment.start, zone, language),
        "contact": settings_row.contact if settings_row else "",
        "link": _join_link(message) if message.kind != MessageKind.CANCELLATION else "",
    }
    return render(template_for(templates, language, message.kind), **values)


def _mine(message: OutboundMessage):
    """The claimed row, as long as this dispatcher still holds it (the sweeper may have taken it back)."""
    return OutboundMessage.objects.filter(pk=message.pk, state=MessageState.SENDING, lease_until=message.lease_until)


def _reschedule(
    message: OutboundMessage, *, after: timedelta, error: str, count_attempt: bool = True
) -> None:
    _mine(message).update(
        state=MessageState.SCHEDULED,
        send_at=timezone.now() + after,
        error=error[:1000],
        lease_until=None,
        attempts=F("attempts") if count_attempt else F("attempts") - 1,
    )


def _fail(message: OutboundMessage, error: str) -> None:
    from connector.webhooks.events import emit_text_outcome

    with transaction.atomic():
        if _mine(message).update(state=MessageState.FAILED, error=error[:1000], lease_until=None):
            # The text.failed webhook commits with the state change.
            emit_text_outcome(
                tenant=message.tenant,
                message_pk=message.pk,
                kind=message.kind,
                appointment_id=message.appointment_id,
                delivered=False,
                at=timezone.now(),
            )


def _endpoint_state(message: OutboundMessage, memo: dict) -> tuple[SmsSettings | None, str]:
    """The endpoint's SMS settings and what blocks sending, read once per dispatch run."""
    key = (message.tenant_id, message.appointment.endpoint_id)
    if key not in memo:
        settings_row = (
            SmsSettings.objects.filter(endpoint_id=message.appointment.endpoint_id)
            .select_related("phone_number")
            .first()
        )
        memo[key] = (settings_row, sending_blocker(message.tenant, settings_row))
    return memo[key]


def send_one(message: OutboundMessage, result: DispatchResult, *, pacer: Pacer, memo: dict) -> None:
    """Send one claimed message (in its tenant's scope)."""
    settings_row = None
    is_opt_answer = message.kind in (MessageKind.OPT_OUT, MessageKind.OPT_IN, MessageKind.HELP)
    if message.appointment_id:
        settings_row, blocker = _endpoint_state(message, memo)
        if blocker:
            _fail(message, f"Not sent: {blocker}")
            result.failed += 1
            return
    if not message.to:
        _fail(message, "Not sent: the number was already purged.")
        result.failed += 1
        return
    if not is_opt_answer and number_is_opted_out(message.tenant, {message.to_hash, *number_hashes(message.to)}):
        _mine(message).update(
            state=MessageState.CANCELLED, error="The number opted out (STOP).", lease_until=None
        )
        result.skipped += 1
        return
    if not is_opt_answer:
        held = patient_cap_reason(message)
        if held:
            _mine(message).update(state=MessageState.HELD, error=held, lease_until=None)
            result.held += 1
            return
    number = message.phone_number
    if number.held_for_us_recipients and region_of(message.to) == "US":
        _reschedule(
            message,
            after=HOLD_RETRY,
            error="Held: the toll-free number is not verified yet.",
            count_attempt=False,
        )
        result.held += 1
        return
    try:
        pacer.take(number.pk)
    except _Paused as pause:
        _reschedule(
            message,
            after=timedelta(seconds=pause.seconds),
            error="Paused by the provider (429).",
            count_attempt=False,
        )
        result.retried += 1
        return
    body = render_body(message, settings_row)
    backend = get_sms_backend(settings.SMS_BACKEND)
    try:
        sent = backend.send(from_number=number.number, to_number=message.to, body=body)
    except SmsError as error:
        if error.retry_after:
            cache.set(
                f"sms-pause:{number.pk}", time.time() + error.retry_after, timeout=int(error.retry_after) + 5
            )
            _reschedule(
                message, after=timedelta(seconds=error.retry_after), error=error.message, count_attempt=False
            )
            result.retried += 1
        elif error.permanent or message.attempts >= MAX_ATTEMPTS:
            _fail(message, error.message)
            if getattr(error, "code", "") == "opted_out":
                OptOut.objects.get_or_create(
                    tenant=message.tenant,
                    number_hash=number_hash(message.to),
                    defaults={"number_last_four": message.to_last_four, "hash_key_id": phone_hash_key_id()},
                )
            result.failed += 1
        else:
            _reschedule(message, after=FIRST_BACKOFF * (2 ** (message.attempts - 1)), error=error.message)
            result.retried += 1
        return
    message_sent_record(message=message, provider=backend.name, provider_message_id=sent.provider_message_id)
    result.sent += 1


def message_sent_record(*, message: OutboundMessage, provider: str, provider_message_id: str) -> None:
    """Write down that the provider accepted the text, then apply any report that came before this record."""
    # The provider's word wins over whatever a sweeper concluded meanwhile (unknown, or due again).
    recordable = [MessageState.SENDING, MessageState.UNKNOWN, MessageState.SCHEDULED]
    OutboundMessage.objects.filter(pk=message.pk, state__in=recordable).update(
        state=MessageState.SENT,
        provider=provider,
        provider_message_id=provider_message_id,
        sent_at=timezone.now(),
        error="",
        lease_until=None,
    )
    # A delivery callback may have arrived while the send was in flight (before this
    # commit); it waits as a PendingDeliveryReport. See delivery_report_apply.
    from sms.services.inbound import pending_reports_apply

    pending_reports_apply(provider_message_id=provider_message_id)


def messages_dispatch(*, budget_seconds: float | None = None) -> DispatchResult:
    """Send due texts one at a time: claim (committed), call the provider, record (committed).

    No transaction is open while the provider is called or the pacer sleeps, so
    a delivery callback can find the text as soon as it is recorded, and a
    worker killed mid-send loses at most the one text it holds (reconciled by
    the sweeper when its lease ends). Stops claiming after `budget_seconds`
    (half the task timeout): the next run, or the one queued after new texts,
    goes on.
    """
    result = DispatchResult()
    pacer = Pacer()
    memo: dict = {}
    deadline = time.monotonic() + (claiming_budget() if budget_seconds is None else budget_seconds)
    while time.monotonic() < deadline:
        with all_tenants():
            message = _claim_one()
        if message is None:
            break
        result.claimed += 1
        if time.monotonic() - memo.setdefault("read_at", time.monotonic()) > 1.0:
            memo.clear()  # setup read at most a second ago: a suspended number stops within a second
        with tenant_scope(message.tenant):
            try:
                send_one(message, result, pacer=pacer, memo=memo)
            except Exception as error:  # noqa: BLE001 - one bad message must not stop the rest
                logger.exception("message %s could not be sent", message.pk)
                _fail(message, f"Internal error: {type(error).__name__}")
                result.failed += 1
    return result
