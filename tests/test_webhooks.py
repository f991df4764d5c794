"""Outbound webhooks: signed deliveries to a real local receiver, retries, disabling, isolation, SSRF guard.

Signatures are checked by `verify` below, written here from the Standard Webhooks
specification with hmac and base64 only, not with the application's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from connector.models import EventKind, Visit
from connector.services.visits import visits_mark_no_show
from connector.sweeper import webhooks_recover
from connector.webhooks.models import DeliveryState, WebhookDelivery, WebhookEndpoint
from connector.webhooks.services import webhook_emit, webhook_endpoint_create
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import signed_in
from tests.test_visit_events import T0, make_visit, record

# Real commits: deliveries are queued on commit and sent outside any transaction, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

ALL_VISIT_EVENTS = [
    "participant.waiting",
    "participant.joined",
    "participant.left",
    "visit.started",
    "visit.ended",
    "visit.no_show",
]


# --- an independent verifier and a real receiver ------------------------------------------


def verify(secret: str, headers: dict, body: bytes, *, tolerance: int = 300) -> bool:
    """Standard Webhooks verification, from the specification: HMAC-SHA256 over "id.timestamp.body"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    return any(
        hmac.compare_digest(sig.split(",", 1)[1].encode(), expected)
        for sig in headers["webhook-signature"].split(" ")
        if sig.startswith("v1,")
    )


class Receiver:
    """An HTTP receiver in a thread; it can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, bytes]] = []
        self.status = 200
        self.refuse: bytes | None = None  # bodies containing this are answered 422
        self.crash_at: int | None = None  # the Nth request is read, then the server dies unanswered
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    crash = receiver.crash_at is not None and len(receiver.received) >= receiver.crash_at
                if crash:
                    # Killed after reading: the sender gets no answer, the event must come again.
                    receiver.crash_at = None
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    threading.Thread(target=receiver.stop, daemon=True).start()
                    return
                refused = receiver.refuse is not None and receiver.refuse in body
                self.send_response(422 if refused else receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def ids(self) -> list[str]:
        return [headers["webhook-id"] for headers, _ in self.received]


@pytest.fixture
def receiver(settings):
    settings.EHR_INSECURE_HOSTS = ["127.0.0.1"]
    settings.EHR_HTTP_TOTAL_TIMEOUT = 5
    started = Receiver().start()
    yield started
    started.stop()


def register(tenant, url, events=ALL_VISIT_EVENTS):
    with tenant_scope(tenant):
        return webhook_endpoint_create(tenant=tenant, url=url, event_types=events)


def deliveries(**filters):
    with all_tenants():
        return list(WebhookDelivery.objects.filter(**filters).order_by("pk"))


def run_sweeper_until_quiet(rounds=40):
    """Move the clock past each backoff and let the sweeper queue what is due (tasks run inline)."""
    for _ in range(rounds):
        with all_tenants():
            waiting = (
                WebhookDelivery.objects.filter(state=DeliveryState.PENDING)
                .order_by("next_attempt_at")
                .first()
            )
        if waiting is None:
            return
        with time_machine.travel(
            max(waiting.next_attempt_at, timezone.now()) + timedelta(seconds=1), tick=False
        ):
            webhooks_recover()
    raise AssertionError("deliveries still pending")


# --- delivery and signature --------------------------------------------------------------


def test_visit_events_reach_the_receiver_signed_with_ids_and_no_names(org_a, receiver, token_client):
    endpoint, secret = register(org_a, receiver.url)
    visit = make_visit(org_a)
    record(visit, "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    record(visit, "e2", EventKind.JOINED, "patient", "p-1", 1)
    record(visit, "e3", EventKind.JOINED, "clinician", "c-1", 2)
    record(visit, "e4", EventKind.LEFT, "clinician", "c-1", 30)
    record(visit, "e5", EventKind.LEFT, "patient", "p-1", 31)

    types = [json.loads(body)["type"] for _, body in receiver.received]
    assert types == [
        "participant.waiting",
        "participant.joined",
        "participant.joined",
        "visit.started",
        "participant.left",
        "participant.left",
        "visit.ended",
    ]
    for headers, body in receiver.received:
        assert headers["content-type"] == "application/json"
        assert verify(secret, headers, body), "signature must verify with the registered secret"
        assert not verify("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, body)
        payload = json.loads(body)
        assert payload["id"] == headers["webhook-id"]
        assert payload["tenant_id"] == org_a.microsoft_tenant_id
    ended = json.loads(receiver.received[-1][1])
    assert ended["data"]["visit"]["id"] == visit.public_id
    # The visit ID is the visits API's: a tool fetches the detail with it.
    api = token_client(org_a, "read").get(
        f"/api/v1/tenants/{org_a.microsoft_tenant_id}/visits/{visit.public_id}/"
    )
    assert api.status_code == 200 and api.json()["state"] == ended["data"]["visit"]["state"]
    joined = json.loads(receiver.received[1][1])["data"]
    assert joined["event"]["id"] == "e2" and isinstance(joined["event"]["seq"], int)
    assert ended["data"]["visit"]["state"] == "completed"
    assert ended["data"]["visit"]["started_at"] == (T0 + timedelta(minutes=2)).isoformat()
    assert json.loads(receiver.received[1][1])["data"]["participant"] == {"id": "p-1", "role": "patient"}
    # Nothing that names or reaches a person.
    assert all(b"phone" not in body and b"name" not in body for _, body in receiver.received)
    assert {d.state for d in deliveries()} == {DeliveryState.DELIVERED}
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
    assert endpoint.last_success_at is not None and endpoint.consecutive_failures == 0


def test_a_tampered_body_or_an_old_timestamp_does_not_verify(org_a, receiver):
    _, secret = register(org_a, receiver.url)
    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    [(headers, body)] = receiver.received
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body.replace(b"patient", b"clinician"))
    assert not verify(secret, {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}, body)


def test_the_same_fact_recorded_twice_is_one_delivery(org_a, receiver):
    register(org_a, receiver.url)
    visit = make_visit(org_a)
    record(visit, "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    record(visit, "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)  # a provider retrying its callback
    with tenant_scope(org_a):
        again = webhook_emit(tenant=org_a, event_type="participant.waiting", key="e1", data={})
    assert again == []
    assert len(receiver.received) == 1


def test_only_endpoints_that_asked_for_the_event_type_get_it(org_a, receiver):
    register(org_a, receiver.url, events=["visit.ended"])
    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    assert receiver.received == [] and deliveries() == []


def test_no_show_scheduling_feed_and_text_reports_emit_their_events(org_a, receiver):
    from sms.backends.base import DeliveryReport
    from sms.models import OutboundMessage
    from sms.services.appointments import appointment_apply
    from sms.services.inbound import delivery_report_apply
    from tests.support.sms import siu, sms_ready_endpoint

    register(
        org_a, receiver.url, events=["visit.no_show", "visit.scheduled", "text.delivered", "text.failed"]
    )
    visit = make_visit(org_a, appointment="NS-1")
    with all_tenants():
        Visit.objects.filter(pk=visit.pk).update(scheduled_end=timezone.now() - timedelta(minutes=5))
        assert visits_mark_no_show() == 1
    endpoint = sms_ready_endpoint(org_a)
    with tenant_scope(org_a):
        applied = appointment_apply(endpoint=endpoint, message=siu(external_id="APPT-9"))
        messages = list(OutboundMessage.objects.filter(appointment=applied.appointment))
    assert messages, "the scheduling message should schedule a confirmation text"
    with all_tenants():
        OutboundMessage.objects.filter(pk=messages[0].pk).update(provider_message_id="SM-1", state="sent")
    report = DeliveryReport(
        provider_message_id="SM-1", status="delivered", error="", occurred_at=timezone.now()
    )
    delivery_report_apply(report)
    delivery_report_apply(report)  # the provider reports twice: one event

    bodies = [json.loads(body) for _, body in receiver.received]
    assert [b["type"] for b in bodies] == ["visit.no_show", "visit.scheduled", "text.delivered"]
    assert bodies[0]["data"]["visit"]["state"] == "no_show"
    assert bodies[1]["data"]["appointment"]["external_id"] == "APPT-9"
    assert b"+1415" not in receiver.received[1][1] and b"+1415" not in receiver.received[2][1]
    assert bodies[2]["data"]["message"]["id"] == messages[0].pk


def test_a_late_arrival_after_the_scheduled_end_is_announced_as_a_no_show_once(org_a, receiver):
    """The no-show rule also applies when an event arrives after the end (visit_recompute), not only in the sweep."""
    register(org_a, receiver.url, events=["visit.no_show", "visit.started"])
    visit = make_visit(org_a, appointment="LATE-1")
    with all_tenants():
        Visit.objects.filter(pk=visit.pk).update(scheduled_end=timezone.now() - timedelta(minutes=30))
        visit = Visit.objects.select_related("tenant").get(pk=visit.pk)

    record(visit, "late-1", EventKind.LOBBY_ENTERED, "patient", "p-1", 170)  # nobody admits them
    record(visit, "late-2", EventKind.LEFT, "patient", "p-1", 175)
    with all_tenants():
        assert Visit.objects.get(pk=visit.pk).state == "no_show"
        assert visits_mark_no_show() == 0  # already a no-show: the sweep adds nothing

    bodies = [json.loads(body) for _, body in receiver.received]
    assert [b["type"] for b in bodies] == ["visit.no_show"]
    assert bodies[0]["data"]["visit"]["state"] == "no_show"


def test_a_feed_certificate_close_to_expiry_emits_certificate_expiring_once(org_a, admin_a, receiver):
    from tests.test_feed_certificates import NOW, upload

    register(org_a, receiver.url, events=["certificate.expiring"])
    upload(org_a, not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=20))
    from sms.services.certificates import certificates_warn_expiring

    assert certificates_warn_expiring(now=NOW) == 1
    assert certificates_warn_expiring(now=NOW + timedelta(days=1)) == 0
    [(headers, body)] = receiver.received
    expiring = json.loads(body)["data"]["certificate"]
    assert expiring["not_after"].startswith((NOW + timedelta(days=20)).date().isoformat())


# --- retries, backoff, disabling ---------------------------------------------------------


def test_a_failing_receiver_is_retried_with_growing_delays_for_a_day_then_disabled_and_admins_e_mailed(
    org_a, admin_a, receiver
):
    receiver.status = 503
    endpoint, _ = register(org_a, receiver.url)
    start = timezone.now()
    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    [delivery] = deliveries()
    assert delivery.state == DeliveryState.PENDING and delivery.attempts == 1
    assert "HTTP 503" in delivery.last_error
    run_sweeper_until_quiet()
    [delivery] = deliveries()
    assert delivery.state == DeliveryState.FAILED
    # Every attempt carried the same ID: a receiver that recovers deduplicates on it.
    assert len(set(receiver.ids())) == 1 and len(receiver.ids()) == delivery.attempts
    assert delivery.attempts >= 10
    assert delivery.retry_until - start <= timedelta(days=1, minutes=1)
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
    assert not endpoint.enabled
    assert "failed for 24 hours" in endpoint.disabled_reason and "HTTP 503" in endpoint.disabled_reason
    [message] = mail.outbox
    assert message.to == [admin_a.email]
    assert receiver.url in message.body and "/portal/webhooks/" in message.body
    # Disabled: new events make no deliveries.
    record(make_visit(org_a, appointment="A-2"), "e9", EventKind.LOBBY_ENTERED, "patient", "p-2", 0)
    assert len(deliveries()) == 1


def test_one_refused_delivery_fails_after_a_day_without_disabling_a_receiver_that_takes_the_others(
    org_a, admin_a, receiver
):
    receiver.refuse = b'"p-bad"'
    endpoint, _ = register(org_a, receiver.url)
    visit = make_visit(org_a)
    record(visit, "e-bad", EventKind.LOBBY_ENTERED, "patient", "p-bad", 0)
    record(visit, "e-good", EventKind.LOBBY_ENTERED, "patient", "p-good", 1)
    run_sweeper_until_quiet()
    states = {d.payload["data"]["participant"]["id"]: d.state for d in deliveries()}
    assert states == {"p-bad": DeliveryState.FAILED, "p-good": DeliveryState.DELIVERED}
    [bad] = deliveries(state=DeliveryState.FAILED)
    assert "HTTP 422" in bad.last_error and bad.last_status == 422
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
    assert endpoint.enabled and mail.outbox == []


def test_backoff_doubles_between_attempts(org_a, receiver, settings):
    from connector.webhooks.sender import backoff_for

    settings.WEBHOOK_FIRST_BACKOFF_SECONDS = 30
    assert [backoff_for(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff_for(20) == timedelta(hours=4)
    receiver.status = 500
    register(org_a, receiver.url)
    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    [first] = deliveries()
    gap = first.next_attempt_at - timezone.now()
    assert timedelta(seconds=25) < gap <= timedelta(seconds=30)
    with time_machine.travel(first.next_attempt_at + timedelta(seconds=1), tick=False):
        webhooks_recover()
        [second] = deliveries()
        assert second.attempts == 2
        assert timedelta(seconds=59) <= second.next_attempt_at - timezone.now() <= timedelta(seconds=60)


def test_an_endpoint_failing_n_times_in_a_row_is_disabled(org_a, admin_a, receiver, settings):
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 3
    receiver.status = 500
    endpoint, _ = register(org_a, receiver.url)
    visit = make_visit(org_a)
    for n in range(3):
        record(visit, f"e{n}", EventKind.LOBBY_ENTERED, "patient", "p-1", n)
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
    assert not endpoint.enabled and "3 deliveries failed in a row" in endpoint.disabled_reason
    assert {d.state for d in deliveries()} == {DeliveryState.FAILED}
    assert len(mail.outbox) == 1


def test_a_success_resets_the_failure_count(org_a, receiver, settings):
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 3
    endpoint, _ = register(org_a, receiver.url)
    visit = make_visit(org_a)
    receiver.status = 500
    record(visit, "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    record(visit, "e2", EventKind.LOBBY_ENTERED, "patient", "p-2", 1)
    receiver.status = 200
    record(visit, "e3", EventKind.LOBBY_ENTERED, "patient", "p-3", 2)
    receiver.status = 500
    record(visit, "e4", EventKind.LOBBY_ENTERED, "patient", "p-4", 3)
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.consecutive_failures == 1


# --- a receiver killed and restarted during a burst ------------------------------------------


def test_a_receiver_killed_and_restarted_during_a_burst_gets_every_event_at_least_once(org_a, receiver):
    register(org_a, receiver.url, events=["participant.waiting"])
    visit = make_visit(org_a)
    receiver.crash_at = 8  # the 8th request is read, then the receiver dies without answering
    for n in range(40):
        record(visit, f"burst-{n}", EventKind.LOBBY_ENTERED, "patient", f"p-{n}", n)
        if n == 20:
            receiver.start()  # back on the same port, mid-burst
    emitted = {d.event_id for d in deliveries()}
    assert len(emitted) == 40
    assert deliveries(state=DeliveryState.PENDING), "some were refused while it was down"
    run_sweeper_until_quiet()
    assert {d.state for d in deliveries()} == {DeliveryState.DELIVERED}
    got = receiver.ids()
    assert set(got) == emitted, "every event delivered at least once"
    assert len(got) > len(set(got)), "the one read by the dying receiver came again, with the same ID"
    # The receiver deduplicates on webhook-id: exactly the 40 events.
    assert len({json.loads(body)["id"] for _, body in receiver.received}) == 40


# --- isolation, API, access --------------------------------------------------------------


def test_api_registers_an_endpoint_and_shows_its_secret_once(org_a, admin_a, api_as, settings):
    client = api_as(admin_a)
    url = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/webhooks/"
    created = client.post(
        url, {"url": "https://hooks.example.org/in", "event_types": ["visit.ended"]}, format="json"
    )
    assert created.status_code == 201, created.content
    secret = created.json()["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    listed = client.get(url).json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [r["url"] for r in rows] == ["https://hooks.example.org/in"]
    assert "secret" not in rows[0]
    detail = client.get(f"{url}{rows[0]['id']}/").json()
    assert "secret" not in detail
    # Stored encrypted: the column does not hold the secret.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("select secret from webhooks_webhookendpoint")
        [(stored,)] = cursor.fetchall()
    assert secret not in stored


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://hooks.example.org/in", "event_types": ["visit.ended"]}, "url"),
        ({"url": "https://10.1.2.3/in", "event_types": ["visit.ended"]}, "url"),
        ({"url": "https://127.0.0.1:8443/in", "event_types": ["visit.ended"]}, "url"),
        ({"url": "not a url", "event_types": ["visit.ended"]}, "url"),
        ({"url": "https://hooks.example.org/in", "event_types": ["visit.exploded"]}, "event_types"),
        ({"url": "https://hooks.example.org/in", "event_types": []}, "event_types"),
    ],
)
def test_api_refuses_bad_registrations_with_a_clear_error(org_a, admin_a, api_as, body, field):
    response = api_as(admin_a).post(
        f"/api/v1/tenants/{org_a.microsoft_tenant_id}/webhooks/", body, format="json"
    )
    assert response.status_code == 400
    assert field in json.dumps(response.json())


def test_organization_b_sees_none_of_a_s_webhooks(org_a, org_b, admin_b, api_as, token_client, receiver):
    endpoint, _ = register(org_a, receiver.url)
    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    [delivery] = deliveries()
    b = f"/api/v1/tenants/{org_b.microsoft_tenant_id}/webhooks/"
    for client in (api_as(admin_b), token_client(org_b, "read_write")):
        listed = client.get(b).json()
        assert (listed["results"] if isinstance(listed, dict) else listed) == []
        logs = client.get(b + "deliveries/").json()
        assert (logs["results"] if isinstance(logs, dict) else logs) == []
        assert client.get(f"{b}{endpoint.pk}/").status_code == 404
        assert client.patch(f"{b}{endpoint.pk}/", {"enabled": False}, format="json").status_code == 404
        assert client.delete(f"{b}{endpoint.pk}/").status_code == 404
        assert client.post(f"{b}deliveries/{delivery.pk}/redeliver/").status_code == 404
    # And B's token cannot reach A's URLs at all.
    a = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/webhooks/"
    assert token_client(org_b, "read_write").get(a).status_code == 404
    with all_tenants():
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).enabled
    assert len(receiver.received) == 1


def test_read_only_tokens_read_but_cannot_change_webhooks(org_a, token_client, receiver):
    endpoint, _ = register(org_a, receiver.url)
    url = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/webhooks/"
    reader = token_client(org_a, "read")
    assert reader.get(url).status_code == 200
    assert reader.get(url + "deliveries/").status_code == 200
    body = {"url": "https://hooks.example.org/x", "event_types": ["visit.ended"]}
    assert reader.post(url, body, format="json").status_code == 403
    assert reader.patch(f"{url}{endpoint.pk}/", {"enabled": False}, format="json").status_code == 403
    writer = token_client(org_a, "read_write")
    assert writer.post(url, body, format="json").status_code == 201
    assert writer.patch(f"{url}{endpoint.pk}/", {"enabled": False}, format="json").status_code == 200


def test_api_delivery_log_and_send_again(org_a, token_client, receiver):
    register(org_a, receiver.url)
    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    writer = token_client(org_a, "read_write")
    url = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/webhooks/deliveries/"
    listed = writer.get(url).json()
    [row] = listed["results"] if isinstance(listed, dict) else listed
    assert row["state"] == "delivered" and row["attempts"] == 1 and row["event_type"] == "participant.waiting"
    response = writer.post(f"{url}{row['id']}/redeliver/", HTTP_IDEMPOTENCY_KEY="again-1")
    assert response.status_code == 202
    assert receiver.ids() == [row["event_id"], row["event_id"]]  # sent again with the same ID
    replay = writer.post(f"{url}{row['id']}/redeliver/", HTTP_IDEMPOTENCY_KEY="again-1")
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert len(receiver.ids()) == 2  # a retried request sends nothing more
    [delivery] = deliveries()
    assert delivery.attempts == 2 and delivery.state == DeliveryState.DELIVERED


# --- SSRF guard --------------------------------------------------------------------------


def test_a_receiver_on_a_private_address_is_refused_unless_allowed_and_the_endpoint_disabled(
    org_a, admin_a, receiver, settings, monkeypatch
):
    from connector import ehr_http

    # A public-looking name that resolves to an internal address (DNS rebinding, metadata).
    real = ehr_http._system_getaddrinfo

    def fake(host, *args, **kwargs):
        if host == "hooks.attacker.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(ehr_http, "_system_getaddrinfo", fake)
    endpoint, _ = register(org_a, "https://hooks.attacker.example/in")
    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    [delivery] = deliveries()
    assert delivery.state == DeliveryState.FAILED
    assert "refused" in delivery.last_error and "public internet" in delivery.last_error
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
    assert not endpoint.enabled and len(mail.outbox) == 1

    # The local receiver is reachable only while the test setting lists 127.0.0.1.
    settings.EHR_INSECURE_HOSTS = []
    with tenant_scope(org_a):
        local = WebhookEndpoint.objects.create(
            tenant=org_a, url=receiver.url, event_types=["participant.waiting"], secret="whsec_" + "A" * 44
        )
    record(make_visit(org_a, appointment="A-2"), "e2", EventKind.LOBBY_ENTERED, "patient", "p-2", 0)
    [refused] = deliveries(endpoint=local)
    assert refused.state == DeliveryState.FAILED and receiver.received == []


# --- rotating the signing secret ------------------------------------------------------------


def test_a_rotated_secret_signs_beside_the_replaced_one_for_a_day_then_alone(org_a, admin_a, api_as, receiver):
    endpoint, old_secret = register(org_a, receiver.url)
    url = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/webhooks/{endpoint.pk}/"

    rotated = api_as(admin_a).post(url + "rotate-secret/")

    assert rotated.status_code == 200, rotated.content
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret
    assert "secret" not in api_as(admin_a).get(url).json()
    assert api_as(admin_a).get(url).json()["previous_secret_until"] == rotated.json()["previous_secret_until"]
    record(make_visit(org_a), "r1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    headers, body = receiver.received[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(old_secret, headers, body) and verify(new_secret, headers, body)

    with time_machine.travel(timezone.now() + timedelta(hours=25), tick=False):
        record(make_visit(org_a, appointment="A-2"), "r2", EventKind.LOBBY_ENTERED, "patient", "p-2", 0)
    headers, body = receiver.received[-1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    # Signed 25 hours ahead of this clock: the timestamp's age is not what is checked here.
    assert not verify(old_secret, headers, body, tolerance=10**6)
    assert verify(new_secret, headers, body, tolerance=10**6)


def test_rotating_again_within_the_day_keeps_only_the_last_two_secrets(org_a, admin_a, api_as, receiver):
    endpoint, first = register(org_a, receiver.url)
    url = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/webhooks/{endpoint.pk}/rotate-secret/"
    second = api_as(admin_a).post(url).json()["secret"]
    third = api_as(admin_a).post(url).json()["secret"]

    record(make_visit(org_a), "r1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)

    headers, body = receiver.received[-1]
    assert verify(third, headers, body) and verify(second, headers, body)
    assert not verify(first, headers, body)


def test_only_an_administrator_or_a_read_write_token_of_the_organization_rotates(
    org_a, org_b, admin_b, viewer_a, api_as, token_client, receiver
):
    endpoint, secret = register(org_a, receiver.url)
    a = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/webhooks/{endpoint.pk}/rotate-secret/"
    b = f"/api/v1/tenants/{org_b.microsoft_tenant_id}/webhooks/{endpoint.pk}/rotate-secret/"
    assert token_client(org_a, "read").post(a).status_code == 403
    assert api_as(viewer_a).post(a).status_code == 403
    assert api_as(admin_b).post(b).status_code == 404
    assert token_client(org_b, "read_write").post(a).status_code == 404
    with all_tenants():
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == secret
    assert token_client(org_a, "read_write").post(a).status_code == 200


def test_portal_rotates_the_secret_and_shows_the_new_one_once(client, org_a, admin_a, receiver):
    endpoint, old_secret = register(org_a, receiver.url)
    signed_in(client, admin_a)

    page = client.post(f"/portal/webhooks/endpoints/{endpoint.pk}/", {"action": "rotate"})

    assert page.status_code == 200
    html = page.content.decode()
    with all_tenants():
        stored = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert stored.secret != old_secret and stored.secret in html and old_secret not in html
    assert "signed with both the new and the replaced secret" in html
    later = client.get("/portal/webhooks/").content.decode()
    assert stored.secret not in later and "The replaced secret signs too until" in later


# --- the portal --------------------------------------------------------------------------


def test_portal_registers_an_endpoint_shows_the_secret_once_and_sends_again(client, org_a, admin_a, receiver):
    signed_in(client, admin_a)
    page = client.post(
        "/portal/webhooks/",
        {"url": receiver.url, "description": "warehouse", "event_types": ["participant.waiting"]},
    )
    assert page.status_code == 201
    html = page.content.decode()
    with tenant_scope(org_a):
        endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret in html and 'class="copy' in html
    later = client.get("/portal/webhooks/").content.decode()
    assert endpoint.secret not in later and receiver.url in later

    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    [delivery] = deliveries()
    log = client.get("/portal/webhooks/").content.decode()
    assert f'data-delivery="{delivery.pk}"' in log and "Delivered" in log
    response = client.post(f"/portal/webhooks/deliveries/{delivery.pk}/send-again/")
    assert response.status_code == 302
    assert len(receiver.received) == 2

    bad = client.post("/portal/webhooks/", {"url": "https://10.0.0.1/x", "event_types": ["visit.ended"]})
    assert bad.status_code == 200 and "internal address" in bad.content.decode()


def test_portal_hides_other_organizations_and_refuses_viewers(
    client, org_a, org_b, admin_b, viewer_a, receiver
):
    endpoint, _ = register(org_a, receiver.url)
    signed_in(client, admin_b)
    assert receiver.url not in client.get("/portal/webhooks/").content.decode()
    assert client.post(f"/portal/webhooks/endpoints/{endpoint.pk}/", {"action": "delete"}).status_code == 404
    client.logout()
    signed_in(client, viewer_a)
    assert client.get("/portal/webhooks/").status_code == 403


def test_an_approval_and_a_failed_text_emit_their_events(org_a, admin_a, receiver):
    from connector.models import EndpointStatus, FhirEndpoint
    from connector.services.approvals import approval_grant
    from connector.services.endpoints import ehr_approvers_set
    from connector.smart import EhrIdentity
    from sms.backends.base import DeliveryReport
    from sms.models import OutboundMessage
    from sms.services.appointments import appointment_apply
    from sms.services.inbound import delivery_report_apply
    from tests.support.sms import siu, sms_ready_endpoint

    register(org_a, receiver.url, events=["endpoint.approved", "text.failed"])
    with tenant_scope(org_a):
        endpoint = FhirEndpoint.objects.create(
            tenant=org_a,
            base_url="https://ehr.example.org/fhir",
            environment="test",
            label="Main",
            status=EndpointStatus.AWAITING_APPROVAL,
        )
        ehr_approvers_set(tenant=org_a, usernames=["analyst1"])
        approval = approval_grant(
            endpoint=endpoint,
            decided_by=admin_a,
            identity=EhrIdentity(
                subject="s-1", fhir_user="", username="ANALYST1", preferred_username="ANALYST1"
            ),
        )
    [(headers, body)] = receiver.received
    approved = json.loads(body)
    assert approved["type"] == "endpoint.approved"
    assert (
        approved["data"]["endpoint"]["id"] == endpoint.pk
        and approved["data"]["approval"]["id"] == approval.pk
    )
    assert b"ANALYST1" not in body and b"analyst1" not in body  # who approved stays in the portal

    sms_endpoint = sms_ready_endpoint(org_a, number="+18335550143")
    with tenant_scope(org_a):
        applied = appointment_apply(endpoint=sms_endpoint, message=siu(external_id="APPT-F"))
        message = OutboundMessage.objects.filter(appointment=applied.appointment).first()
    with all_tenants():
        OutboundMessage.objects.filter(pk=message.pk).update(provider_message_id="SM-F", state="sent")
    delivery_report_apply(
        DeliveryReport(
            provider_message_id="SM-F", status="failed", error="30003 unreachable", occurred_at=timezone.now()
        )
    )
    failed = json.loads(receiver.received[-1][1])
    assert failed["type"] == "text.failed" and failed["data"]["message"]["id"] == message.pk
    assert b"30003" not in receiver.received[-1][1]  # the provider's reason may quote the number: not sent


# --- the cause never waits; no transaction across the POST -----------------------------------


@pytest.mark.tasks
def test_recording_an_event_only_queues_the_delivery_and_a_worker_sends_it(org_a, receiver, drain_task_queue):
    register(org_a, receiver.url)
    visit = make_visit(org_a)
    record(visit, "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    # The event is recorded; nothing was sent while recording it, the task waits on the real broker.
    assert receiver.received == []
    [delivery] = deliveries()
    assert delivery.state == DeliveryState.PENDING and delivery.attempts == 0
    ran = [r for r in drain_task_queue() if r[0] == "connector.webhooks.tasks.webhook_deliver"]
    assert ran == [("connector.webhooks.tasks.webhook_deliver", (delivery.pk,), "delivered")]
    assert len(receiver.received) == 1
    # Queued again (a sweeper racing a worker): the claim lets only one send.
    from connector.webhooks.tasks import webhook_deliver

    assert webhook_deliver(delivery.pk) == "not due"
    assert len(receiver.received) == 1


def test_no_transaction_is_open_while_a_delivery_is_posted(org_a, receiver, monkeypatch):
    from django.db import connection

    from connector.webhooks import sender

    seen = []
    real = sender.guarded_post_bytes

    def post(*args, **kwargs):
        seen.append(connection.in_atomic_block)
        return real(*args, **kwargs)

    monkeypatch.setattr(sender, "guarded_post_bytes", post)
    register(org_a, receiver.url)
    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    assert seen == [False] and len(receiver.received) == 1


def test_finished_deliveries_are_forgotten_after_the_log_period(org_a, receiver, settings):
    from connector.webhooks.tasks import webhook_deliveries_purge

    settings.WEBHOOK_LOG_DAYS = 30
    register(org_a, receiver.url)
    receiver.status = 500
    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)  # pending: kept
    receiver.status = 200
    record(make_visit(org_a, appointment="A-2"), "e2", EventKind.LOBBY_ENTERED, "patient", "p-2", 0)
    assert webhook_deliveries_purge() == 0
    with time_machine.travel(timezone.now() + timedelta(days=31), tick=False):
        assert webhook_deliveries_purge() == 1
    assert [d.state for d in deliveries()] == [DeliveryState.PENDING]
