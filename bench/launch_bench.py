"""Benchmark: the connector's own share of a provider launch, against the sandbox EHR.

By default against the sandbox's `r4-generic` server, which behaves like most EHRs (and
the third-party peer): no appointment in the token, so every first launch finds it through
FHIR (Encounter, then Encounter.appointment). The bench prints how many FHIR requests a
launch makes beyond the token exchange, for first launches (each of a new visit: the visits
are deleted between launches, outside the measured requests) and for relaunches of a
known visit (none expected). `--flavor r4` measures the fhirContext path instead.

Runs the real service on a fresh test database and drives full provider launches over
HTTP: /launch/provider ->
the sandbox's authorize -> /launch/callback -> the meeting's join URL. For the
connector's two requests it measures the time spent in the handler minus the
time spent waiting for the EHR (every outbound call goes through
connector.ehr_http) and the meeting provider (the in-memory backend here).
The reference is a bare Django view doing one database read, timed the same
way in the same run.

The connector answers in one thread of this process that keeps its database connection,
as a production worker does with DB_CONN_MAX_AGE; the sandbox EHR runs in a child process
on the same database, as an EHR is another system (in this process its threads would hold
the interpreter lock the connector's thread waits for, and that wait would be counted as
the connector's).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector .venv/bin/python bench/launch_bench.py
    .venv/bin/python bench/launch_bench.py --launches 300        # SQLite

Target (issues 4 and 10): p95 of the connector's share at most 50 ms, with the FHIR reads;
at most two FHIR reads beyond the token exchange, none on a relaunch.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connector.settings")
os.environ.setdefault("SANDBOX_EHR", "true")
os.environ.setdefault("EHR_INSECURE_HOSTS", "127.0.0.1,localhost")
os.environ.setdefault("MEETING_BACKEND", "connector.meetings.locmem.LocmemMeetingBackend")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Persistent database connections, as in production (DB_CONN_MAX_AGE in .env.example).
os.environ.setdefault("DB_CONN_MAX_AGE", "600")

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler, WSGIServer  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.urls import path  # noqa: E402

import connector.ehr_http as ehr_http  # noqa: E402
import connector.urls  # noqa: E402

_outbound = threading.local()


FHIR_TYPES = ("/Appointment", "/Encounter")


def _timed_outbound(function):
    def wrapper(*args, **kwargs):
        if len(args) >= 2 and args[0] == "GET" and any(t in str(args[1]) for t in FHIR_TYPES):
            _outbound.fhir_reads = getattr(_outbound, "fhir_reads", 0) + 1
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _outbound.seconds = getattr(_outbound, "seconds", 0.0) + time.perf_counter() - start

    return wrapper


def bare_view(request):
    from tenants.models import Tenant

    Tenant.objects.filter(pk=1).first()
    return HttpResponse("ok")


urlpatterns = [path("bench/bare", bare_view), *connector.urls.urlpatterns]
handler404 = connector.urls.handler404
handler500 = connector.urls.handler500

own_share: dict[str, list[float]] = {"launch": [], "relaunch": [], "bare": []}
fhir_reads: dict[str, list[int]] = {"launch": [], "relaunch": []}
PROFILER = None  # a cProfile.Profile with --profile
by_path: dict[str, list[float]] = {}
_current: dict[str, float] = {}


class TimingMiddleware:
    """Server-side handler time minus outbound waiting, for the paths we measure."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        _outbound.seconds = 0.0
        _outbound.fhir_reads = 0
        start = time.perf_counter()
        if PROFILER is not None and request.path.startswith("/launch/"):
            PROFILER.enable()
            response = self.get_response(request)
            PROFILER.disable()
        else:
            response = self.get_response(request)
        spent = time.perf_counter() - start - _outbound.seconds
        if request.path.startswith("/launch/"):
            _current["launch"] = _current.get("launch", 0.0) + spent
            _current["fhir_reads"] = _current.get("fhir_reads", 0) + _outbound.fhir_reads
            by_path.setdefault(request.path, []).append(spent)
        elif request.path == "/bench/bare":
            own_share["bare"].append(spent)
        return response


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--launches", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--flavor", default="r4-generic", help="the sandbox server: r4-generic (peer-like) or r4"
    )
    parser.add_argument("--profile", action="store_true", help="print where the launch handlers spend time")
    args = parser.parse_args()
    if args.profile:
        import cProfile

        global PROFILER
        PROFILER = cProfile.Profile()

    # Wrap the one outbound client and the meeting backend's create call.
    ehr_http.ehr_request = _timed_outbound(ehr_http.ehr_request)
    from connector.meetings.locmem import LocmemMeetingBackend

    LocmemMeetingBackend.create_meeting = _timed_outbound(LocmemMeetingBackend.create_meeting)

    setup_test_environment()
    settings.ROOT_URLCONF = __name__
    settings.MIDDLEWARE = [f"{__name__}.TimingMiddleware", *settings.MIDDLEWARE]
    settings.SMART_SIGNING_KEY_FILES = []
    settings.DEBUG = True  # the development signing key under var/
    if connection.vendor == "sqlite":
        # A file, not memory: the sandbox EHR's process opens the same database.
        connection.settings_dict.setdefault("TEST", {})["NAME"] = str(ROOT / "var" / "launch_bench.sqlite3")
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=False, serialize=False
    )
    # The sandbox EHR runs in a child process, as an EHR is another system: in the same
    # process its threads would hold the interpreter lock while the connector's thread
    # wants it back (up to 5 ms a switch), which would be counted as the connector's.
    # The connector's server answers one request at a time in one thread that keeps its
    # database connection, as a production worker does with DB_CONN_MAX_AGE (Django's
    # threaded live server opens a new connection for every request).
    connections.close_all()  # the child must not share the parent's database sockets
    ports = multiprocessing.get_context("fork").Queue()
    ehr_process = multiprocessing.get_context("fork").Process(target=serve_ehr, args=(ports,), daemon=True)
    ehr_process.start()
    ehr_base = f"http://127.0.0.1:{ports.get(timeout=30)}"
    connector_server = WSGIServer(("127.0.0.1", 0), QuietRequestHandler)
    connector_server.set_app(WSGIHandler())
    connector_thread = threading.Thread(target=serve_then_disconnect, args=(connector_server,), daemon=True)
    connector_thread.start()
    base = f"http://127.0.0.1:{connector_server.server_port}"
    settings.PUBLIC_BASE_URL = base
    try:
        run(base, ehr_base, args)
    finally:
        connector_server.shutdown()
        connector_thread.join()
        ehr_process.terminate()
        ehr_process.join()
        connections.close_all()
        connection.creation.destroy_test_db(old_name, verbosity=0)


def serve_then_disconnect(server) -> None:
    try:
        server.serve_forever()
    finally:
        connections.close_all()  # this thread's connection, before the test database is dropped


class QuietRequestHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # the EHR's access log is noise here
        pass


def serve_ehr(ports) -> None:
    """The sandbox EHR's server, in the child process (threaded: it calls nobody back)."""
    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietRequestHandler)
    server.set_app(WSGIHandler())
    ports.put(server.server_port)
    server.serve_forever()


def run(base: str, ehr_base: str, args) -> None:
    from connector.models import ClinicianLink, EndpointStatus, FhirEndpoint, Visit
    from connector.sandbox_ehr.seed import seed_sandbox_ehr
    from connector.sandbox_ehr.services import launch_create
    from tenants.models import Tenant, TenantStatus
    from tenants.scoping import tenant_scope

    seed_sandbox_ehr()
    user_model = django.contrib.auth.get_user_model()
    clinician = user_model.objects.create_user(username="bench-clinician")
    tenant = Tenant.objects.create(
        name="Bench",
        microsoft_tenant_id="33333333-3333-4333-8333-333333333333",
        ehr_vendor="epic",
        data_region="americas",
        status=TenantStatus.ENABLED,
    )
    iss = f"{ehr_base}/sandbox-ehr/fhir/{args.flavor}"
    with tenant_scope(tenant):
        FhirEndpoint.objects.create(
            tenant=tenant, base_url=iss, environment="test", label="Bench", status=EndpointStatus.APPROVED
        )
        for practitioner in ("pract-smith", "pract-park", "pract-nguyen"):
            ClinicianLink.objects.create(
                tenant=tenant,
                user=clinician,
                environment="test",
                fhir_user=f"{iss}/Practitioner/{practitioner}",
            )

    def one_launch(appointment: str) -> None:
        launch = launch_create(appointment_id=appointment, role="provider", server=args.flavor)
        session = requests.Session()
        _current.clear()
        response = session.get(
            f"{base}/launch/provider?" + urlencode({"iss": iss, "launch": launch.launch_id}),
            allow_redirects=False,
            timeout=30,
        )
        response = session.get(response.headers["Location"], allow_redirects=False, timeout=30)
        response = session.get(response.headers["Location"], allow_redirects=False, timeout=30)
        location = response.headers.get("Location", "")
        assert response.status_code == 302 and "meetings.invalid" in location, (
            response.status_code,
            location,
            response.text[:400],
        )

    appointments = ["appt-1001", "appt-1002", "appt-1003", "appt-1004", "appt-1005"]
    # First launches: every one finds its appointment (the visits are deleted in between).
    for i in range(args.warmup + args.launches):
        one_launch(appointments[i % len(appointments)])
        if i >= args.warmup:
            own_share["launch"].append(_current["launch"])
            fhir_reads["launch"].append(_current["fhir_reads"])
        with tenant_scope(tenant):
            Visit.objects.all().delete()
        requests.get(f"{base}/bench/bare", timeout=30)
    # Relaunches of known visits.
    for appointment in appointments:
        one_launch(appointment)
    for i in range(args.launches):
        one_launch(appointments[i % len(appointments)])
        own_share["relaunch"].append(_current["launch"])
        fhir_reads["relaunch"].append(_current["fhir_reads"])
    bare = own_share["bare"][args.warmup :]
    launch = own_share["launch"]
    ms = 1000.0
    p50, p95 = percentile(launch, 0.50) * ms, percentile(launch, 0.95) * ms
    b50, b95 = percentile(bare, 0.50) * ms, percentile(bare, 0.95) * ms
    print(f"database: {connection.vendor}; launches measured: {len(launch)}")
    mean = statistics.mean(launch) * ms
    print(f"connector's share of a launch: p50 {p50:.1f} ms, p95 {p95:.1f} ms (mean {mean:.1f} ms)")
    print(f"bare view with one database read: p50 {b50:.2f} ms, p95 {b95:.2f} ms")
    print(f"ratio launch/bare: p50 {p50 / b50:.1f}x, p95 {p95 / b95:.1f}x")
    print(f"target p95 <= 50 ms: {'met' if p95 <= 50 else 'NOT met'}")
    relaunch = own_share["relaunch"]
    print(
        f"relaunch of a known visit: p50 {percentile(relaunch, 0.5) * ms:.1f} ms, "
        f"p95 {percentile(relaunch, 0.95) * ms:.1f} ms"
    )
    for kind in ("launch", "relaunch"):
        counts = fhir_reads[kind]
        print(
            f"FHIR requests beyond the token exchange, {kind}: max {max(counts)}, "
            f"typical {statistics.median(counts):g} (goal: {'<= 2' if kind == 'launch' else '0'})"
        )
    for request_path, values in sorted(by_path.items()):
        print(
            f"  {request_path}: p50 {percentile(values, 0.5) * ms:.1f} ms, p95 {percentile(values, 0.95) * ms:.1f} ms"
        )
    if PROFILER is not None:
        import pstats

        order, lines = os.environ.get("PROFILE_SORT", "tottime"), int(os.environ.get("PROFILE_LINES", "25"))
        pstats.Stats(PROFILER).sort_stats(order).print_stats(lines)


if __name__ == "__main__":
    main()
