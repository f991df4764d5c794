"""Benchmark: outbound webhooks, what emitting costs the code that records a fact, and sending throughput.

In a throwaway database (PostgreSQL with DATABASE_URL, SQLite otherwise):

1. Emit: N lobby events recorded with `event_record` (the visit event path) for
   an organization without webhooks (the reference) and for one with a subscribed
   endpoint (one delivery row per event, its task queued on commit on the real
   django-q2 broker); ms per event, the ratio, and the queries per event.
2. Send: the N deliveries sent one after the other with `webhook_deliver`
   (claim, sign, POST through the SSRF-guarded client, record) to a local
   receiver (http.server in a thread); the reference is a bare `requests.post`
   of the same signed body to the same receiver (no guard, no database).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector .venv/bin/python bench/webhooks_bench.py
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connector.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["EHR_INSECURE_HOSTS"] = "127.0.0.1"

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _tenant_and_visit(tid: str, name: str):
    from connector.models import EndpointStatus, FhirEndpoint
    from connector.services.visits import visit_get_or_create
    from tenants.models import Tenant, TenantStatus
    from tenants.scoping import tenant_scope

    tenant = Tenant.objects.create(
        name=name,
        microsoft_tenant_id=tid,
        ehr_vendor="epic",
        data_region="americas",
        status=TenantStatus.ENABLED,
    )
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.create(
            tenant=tenant,
            base_url="https://fhir.example.org/R4",
            environment="test",
            label="Main",
            status=EndpointStatus.APPROVED,
        )
        visit = visit_get_or_create(endpoint=endpoint, appointment_id="A-1", encounter_id="enc-1")
    return tenant, visit


def _record_events(tenant, visit, count: int, prefix: str) -> float:
    from connector.models import EventKind
    from connector.services.visits import event_record
    from tenants.scoping import tenant_scope

    start_at = timezone.now() - timedelta(hours=1)
    started = time.perf_counter()
    with tenant_scope(tenant):
        for i in range(count):
            event_record(
                visit=visit,
                event_id=f"{prefix}-{i}",
                kind=EventKind.LOBBY_ENTERED,
                role="patient",
                participant_id=f"p-{i}",
                occurred_at=start_at,
                source="connector",
            )
    return time.perf_counter() - started


def _queries_per_event(tenant, visit, prefix: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        _record_events(tenant, visit, 1, prefix)
    return len(captured)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300)
    args = parser.parse_args()
    setup_test_environment()
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=False, serialize=False
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        import requests
        from django_q.brokers import get_broker

        from connector.webhooks.models import DeliveryState, WebhookDelivery
        from connector.webhooks.sender import body_for, signed_headers, webhook_deliver
        from connector.webhooks.services import webhook_endpoint_create
        from tenants.scoping import all_tenants, tenant_scope

        plain_tenant, plain_visit = _tenant_and_visit("55555555-5555-4555-8555-555555555555", "No webhooks")
        hooked_tenant, hooked_visit = _tenant_and_visit("66666666-6666-4666-8666-666666666666", "Webhooks")
        with tenant_scope(hooked_tenant):
            webhook_endpoint_create(tenant=hooked_tenant, url=url, event_types=["participant.waiting"])

        reference_seconds = _record_events(plain_tenant, plain_visit, args.events, "plain")
        emit_seconds = _record_events(hooked_tenant, hooked_visit, args.events, "hooked")
        plain_queries = _queries_per_event(plain_tenant, plain_visit, "plain-q")
        hooked_queries = _queries_per_event(hooked_tenant, hooked_visit, "hooked-q")
        get_broker().purge_queue()

        with all_tenants():
            pks = list(WebhookDelivery.objects.order_by("pk").values_list("pk", flat=True))
            sample = WebhookDelivery.objects.select_related("endpoint").get(pk=pks[0])
        started = time.perf_counter()
        with tenant_scope(hooked_tenant):
            for pk in pks:
                webhook_deliver(delivery_pk=pk)
        send_seconds = time.perf_counter() - started
        with all_tenants():
            delivered = WebhookDelivery.objects.filter(state=DeliveryState.DELIVERED).count()
        assert delivered == len(pks), f"only {delivered} of {len(pks)} delivered"

        body = body_for(sample)
        started = time.perf_counter()
        for _ in pks:
            headers = signed_headers(secret=sample.endpoint.secret, event_id=sample.event_id, body=body)
            assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 204
        bare_seconds = time.perf_counter() - started
    finally:
        server.shutdown()
        server.server_close()
        connection.creation.destroy_test_db(old_name, verbosity=0)

    per_plain = reference_seconds / args.events * 1000
    per_hooked = emit_seconds / args.events * 1000
    print(f"database: {connection.vendor}; events: {args.events}")
    print(
        f"event_record with a subscribed webhook: {per_hooked:.2f} ms/event, {hooked_queries} queries; "
        f"reference without webhooks: {per_plain:.2f} ms/event, {plain_queries} queries; "
        f"ratio {per_hooked / per_plain:.2f}"
    )
    rate = len(pks) / send_seconds
    bare = len(pks) / bare_seconds
    print(
        f"webhook_deliver to a local receiver: {rate:.0f} deliveries/s ({send_seconds * 1000 / len(pks):.2f} ms each); "
        f"reference bare requests.post: {bare:.0f}/s; ratio {rate / bare:.2f}"
    )


if __name__ == "__main__":
    main()
