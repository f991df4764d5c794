"""Benchmark: the HTTPS scheduling feed, from signed SIU message to stored appointment and scheduled texts.

Each message goes through the real view (`POST /sms/ingest/<tenant>/<env>/`),
posted in-process to the project's WSGI application (`connector.wsgi`) as a WSGI
server would post it: the project's middleware (settings.MIDDLEWARE), signature check,
parsing, endpoint lookup, idempotency check, `appointment_apply` (appointment
row, confirmation and reminders, the dispatch task queued on commit) and the
processing record, in a throwaway database (PostgreSQL with DATABASE_URL,
SQLite otherwise). In-process rather than over a socket so that the figure is
the connector's own cost, not the network's or a WSGI server's.

The reference, in the same run and on the same messages, is parsing alone with
the same library (python-hl7's `hl7.parse`), and parsing plus the field mapping
(`scheduling_parse`).

The headline figure is three worker processes posting at once, as a WSGI
server would run on two cores (one more worker than cores: while one waits for
PostgreSQL to flush its commit to disk, the others use the CPU; on this machine
3 workers measured better than 2 or 4), in production mode (no DEBUG query log, a real
field-encryption key, persistent connections), measured in three rounds and
given as the median: the machine is a shared VM whose speed varies from one
minute to the next (the same code has cost 3.3 and 5.8 ms of CPU per message
within an hour). The "CPU per message" line (the workers' CPU
time, and their PostgreSQL backends' read from /proc) tells a slow minute from
slower code. `--workers 1` shows where one message's time goes.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector .venv/bin/python bench/sms_ingest_bench.py
    DATABASE_URL=... .venv/bin/python bench/sms_ingest_bench.py --workers 1      # per-step breakdown
    .venv/bin/python bench/sms_ingest_bench.py --messages 500 --key p256     # SQLite, EC signatures

Target (issue 11): at least 250 messages/s with three worker processes on a 2-core machine
(the anchor: about 200 messages/s per core for a commercial interface engine).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connector.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Persistent database connections, as in production: with 0 every request (and
# django-q's enqueue on commit) opens a new PostgreSQL connection.
os.environ.setdefault("DB_CONN_MAX_AGE", "600")
# A field-encryption key of its own, as production has (phone numbers are encrypted).
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", Fernet.generate_key().decode())

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

# As in production: no query log kept per request (DEBUG adds a cost to every query).
settings.DEBUG = False

import hl7  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

TENANT_ID = "55555555-5555-4555-8555-555555555555"
ZONE = "America/Chicago"


def siu(number: int, *, trigger: str, sent: datetime, start: datetime) -> bytes:
    """A realistic Epic-like SIU message; made-up patient, fictional 555-01xx number."""
    local_start = start.astimezone(ZoneInfo(ZONE))
    segments = [
        f"MSH|^~\\&|EPIC|NVH|VCONNECT|VIRTUALCARE|{sent.astimezone(ZoneInfo(ZONE)):%Y%m%d%H%M%S}||"
        f"SIU^{trigger}^SIU_S12|BENCH{trigger}{number:08d}|P|2.5.1|||AL|NE",
        f"SCH|{4100000000 + number}^EPIC|{4100000000 + number}^EPIC|||||VIDEO^Video visit^EPICVT||30|MIN|"
        f"^^30^{local_start:%Y%m%d%H%M%S}|||||1001^CARTER^AVERY||||1001^CARTER^AVERY|||||Booked",
        f"TQ1|1||||||{local_start:%Y%m%d%H%M%S}",
        f"PID|1||E{number:07d}^^^EPI^MRN||TESTPATIENT^BENCH{number}^J||19850314|F|||1 EXAMPLE ST^^SPRINGFIELD^IL"
        f"^62701^USA^H||^PRN^PH^^1^217^5550142~^PRN^CP^^1^415^55501{number % 100:02d}||ENG^English^HL70296",
        "PV1|1|O|NVH VIRTUAL MED^^^NVH",
        "RGS|1|A",
        f"AIS|1|A|VIDEO^Video visit^EPICVT|{local_start:%Y%m%d%H%M%S}|0|MIN|30|MIN",
        "AIL|1|A|NVH Cardiology \\T\\ Vascular^^^NVH",
    ]
    return "\r".join(segments).encode()


def feed_environ(url: str, body: bytes, signature: str) -> dict:
    """The WSGI environ of one signed message POSTed to the feed, as a WSGI server would build it."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": url,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_TYPE": "x-application/hl7-v2+er7",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_X_HL7_SIGNATURE": signature,
    }


def set_up(key_kind: str):
    from connector.models import EndpointStatus, FhirEndpoint
    from sms.models import NumberState, PhoneNumber, SmsConsent, SmsSettings, TollFreeVerification
    from sms.services.certificates import certificate_upload
    from tenants.models import Tenant, TenantStatus
    from tenants.scoping import tenant_scope
    from tests.support.hl7_feed import make_certificate, make_key, pem

    tenant = Tenant.objects.create(
        name="Bench",
        microsoft_tenant_id=TENANT_ID,
        ehr_vendor="epic",
        data_region="americas",
        status=TenantStatus.ENABLED,
    )
    key = make_key(key_kind)
    certificate_upload(tenant=tenant, environment="test", data=pem(make_certificate(key)), uploaded_by=None)
    now = datetime.now(UTC)
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.create(
            tenant=tenant,
            environment="test",
            time_zone=ZONE,
            status=EndpointStatus.APPROVED,
            label="Bench",
            base_url="https://fhir.example.org/bench/api/FHIR/R4",
        )
        SmsConsent.objects.create(tenant=tenant, on_behalf_confirmed_at=now, patient_consent_confirmed_at=now)
        number = PhoneNumber.objects.create(
            tenant=tenant,
            number="+18335550100",
            state=NumberState.ACTIVE,
            verification=TollFreeVerification.VERIFIED,
        )
        SmsSettings.objects.create(tenant=tenant, endpoint=endpoint, phone_number=number)
    return tenant, key


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--messages", type=int, default=1000, help="new appointments (S12); half as many S13 follow"
    )
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--key", choices=["rsa2048", "p256", "p384"], default="rsa2048")
    parser.add_argument(
        "--workers",
        type=int,
        default=3,
        help="processes posting at once (forked), as WSGI workers would; 1 for the per-step breakdown",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="with several workers: measure in this many rounds and report the median (the machine is shared)",
    )
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


class Stopwatch:
    """Time spent in one function, summed over the run (wraps it where the ingest code looks it up)."""

    def __init__(self, module, name: str) -> None:
        self.seconds = 0.0
        function = getattr(module, name)

        def timed(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - begin

        setattr(module, name, timed)


def run(args) -> None:
    import sms.hl7.ingest as ingest_module
    import sms.hl7.views as views_module
    from tests.support.hl7_feed import sign

    tenant, key = set_up(args.key)
    now = datetime.now(UTC).replace(microsecond=0)
    count = args.messages
    bodies = [
        (
            i,
            siu(
                i,
                trigger="S12",
                sent=now - timedelta(minutes=10),
                start=now + timedelta(days=3, minutes=7 * i),
            ),
        )
        for i in range(args.warmup + count)
    ]
    # Reschedules of half of the measured appointments, one hour later.
    bodies += [
        (
            i,
            siu(
                i,
                trigger="S13",
                sent=now - timedelta(minutes=5),
                start=now + timedelta(days=3, minutes=7 * i + 60),
            ),
        )
        for i in range(args.warmup, args.warmup + count // 2)
    ]
    # Signing is the EHR's work: done beforehand, not measured.
    signed = [(number, body, sign(body, key)) for number, body in bodies]
    url = f"/sms/ingest/{TENANT_ID}/test/"
    from connector.wsgi import application  # what a WSGI server (gunicorn, uWSGI) calls

    def post(body: bytes, signature: str) -> None:
        status = []
        text = b"".join(
            application(feed_environ(url, body, signature), lambda line, headers: status.append(line))
        ).decode()
        assert status[0].startswith("200") and "MSA|AA|" in text, (status, text[:300])

    for _, body, signature in signed[: args.warmup]:
        post(body, signature)
    measured = signed[args.warmup :]

    if args.workers > 1:
        rates, latencies, elapsed, cpu = [], [], 0.0, [0.0, 0.0]
        block = -(-count // args.rounds)  # consecutive appointments per round (ceiling)

        def round_of(number: int) -> int:
            return (number - args.warmup) // block

        for round_number in range(args.rounds):
            # Each round its own appointments: an S13 stays in the round (and process) of its S12.
            share = [item for item in measured if round_of(item[0]) == round_number]
            seconds, round_latencies, python_cpu, database_cpu = run_in_processes(args.workers, share, post)
            cpu[0] += python_cpu
            cpu[1] += database_cpu
            rates.append(len(share) / seconds)
            latencies += round_latencies
            elapsed += seconds
        report(args, tenant, measured, elapsed, latencies, None, rates, cpu)
        return

    watches = (
        Stopwatch(ingest_module, "ingest_message"),
        Stopwatch(ingest_module, "scheduling_parse"),
        Stopwatch(ingest_module, "appointment_apply"),
    )
    views_module.ingest_message = ingest_module.ingest_message  # the view calls the timed one
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    latencies = []
    started = time.perf_counter()
    for _, body, signature in measured:
        begin = time.perf_counter()
        post(body, signature)
        latencies.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - started
    if profiler:
        profiler.disable()
    report(args, tenant, measured, elapsed, latencies, watches)
    if profiler:
        import pstats

        order, rows = os.environ.get("BENCH_SORT", "cumulative"), int(os.environ.get("BENCH_ROWS", "40"))
        pstats.Stats(profiler).sort_stats(order).print_stats(rows)


def _database_cpu_seconds() -> float:
    """CPU time used so far by this connection's PostgreSQL backend (0 elsewhere, or where /proc cannot tell)."""
    if connection.vendor != "postgresql":
        return 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_in_processes(workers: int, measured, post) -> tuple[float, list[float], float, float]:
    """The same messages shared among `workers` forked processes, each with its own database
    connection, as several WSGI workers would take them. One appointment's messages stay in
    one process, in order."""
    import multiprocessing

    from django.db import connections

    connections.close_all()  # never share a connection across fork
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(workers + 1)
    results = context.Queue()

    def work(index: int) -> None:
        mine = [(body, signature) for number, body, signature in measured if number % workers == index]
        latencies = []
        try:
            database_before = _database_cpu_seconds()  # also opens this process's connection
            ready.wait()
            cpu_before = time.process_time()
            for body, signature in mine:
                begin = time.perf_counter()
                post(body, signature)
                latencies.append(time.perf_counter() - begin)
            cpu = (time.process_time() - cpu_before, _database_cpu_seconds() - database_before)
        except BaseException as error:  # tell the parent rather than leave it waiting forever
            ready.abort()
            results.put(f"worker {index}: {type(error).__name__}: {error}"[:2000])
            raise
        finally:
            connections.close_all()
        results.put((latencies, cpu))

    processes = [context.Process(target=work, args=(index,)) for index in range(workers)]
    for process in processes:
        process.start()
    # A worker that failed before the start breaks the barrier: its report is in `results`.
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait()
    started = time.perf_counter()
    latencies, python_cpu, database_cpu = [], 0.0, 0.0
    for _ in processes:
        answer = results.get()
        if isinstance(answer, str):
            for process in processes:
                process.terminate()
            raise SystemExit(f"a worker failed: {answer}")
        latencies += answer[0]
        python_cpu += answer[1][0]
        database_cpu += answer[1][1]
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    return elapsed, latencies, python_cpu, database_cpu


def report(
    args, tenant, measured, elapsed: float, latencies: list[float], watches, rates=None, cpu=None
) -> None:
    from sms.hl7.parse import scheduling_parse
    from sms.models import Appointment, OutboundMessage, ProcessedMessage
    from tenants.scoping import tenant_scope

    # The references: the same messages, parsed only, in this process.
    rounds = 3
    texts = [body.decode() for _, body, _ in measured]
    begin = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            hl7.parse(text)
    library_rate = rounds * len(texts) / (time.perf_counter() - begin)
    begin = time.perf_counter()
    for _ in range(rounds):
        for _, body, _ in measured:
            scheduling_parse(body, time_zone=ZONE)
    mapping_rate = rounds * len(measured) / (time.perf_counter() - begin)

    with tenant_scope(tenant):
        appointments = Appointment.objects.count()
        texts_scheduled = OutboundMessage.objects.count()
        records = ProcessedMessage.objects.count()
    rate = statistics.median(rates) if rates else len(measured) / elapsed
    ms = 1000.0
    count = args.messages
    print(
        f"database: {connection.vendor}; signatures: {args.key}; processes: {args.workers}; "
        f"messages measured: {len(measured)} ({count} SIU^S12 new + {count // 2} SIU^S13 reschedules), "
        "through the real view in-process (the WSGI application)"
    )
    print(
        f"stored: {appointments} appointments, {records} processing records, {texts_scheduled} texts scheduled"
    )
    print(
        f"ingest (verify, parse, store, schedule): {rate:.0f} messages/s; per message "
        f"p50 {percentile(latencies, 0.5) * ms:.2f} ms, p95 {percentile(latencies, 0.95) * ms:.2f} ms, "
        f"mean {statistics.mean(latencies) * ms:.2f} ms"
    )
    if rates:
        print(
            f"  median of {len(rates)} rounds: "
            + ", ".join(f"{value:.0f}" for value in rates)
            + " messages/s"
        )
    if cpu:
        database = (
            f", PostgreSQL {cpu[1] * ms / len(measured):.2f} ms (their backends)"
            if connection.vendor == "postgresql"
            else " (SQLite works inside them)"
        )
        print(f"  CPU per message: Python {cpu[0] * ms / len(measured):.2f} ms (the workers){database}")
    if watches:
        in_ingest, in_parse, in_apply = watches
        each = ms / len(measured)
        print(
            f"  per message: ingest_message {in_ingest.seconds * each:.2f} ms, of which parsing "
            f"{in_parse.seconds * each:.2f} ms and appointment_apply {in_apply.seconds * each:.2f} ms; "
            f"view, middleware and WSGI handler {(elapsed - in_ingest.seconds) * each:.2f} ms"
        )
    print(
        f"parsing alone (python-hl7 hl7.parse): {library_rate:.0f} messages/s; "
        f"ingest is {library_rate / rate:.1f}x slower"
    )
    print(
        f"parsing + field mapping (scheduling_parse): {mapping_rate:.0f} messages/s; "
        f"ingest is {mapping_rate / rate:.1f}x slower"
    )
    print(f"target >= 250 messages/s: {'met' if rate >= 250 else 'NOT met'}")


if __name__ == "__main__":
    main()
