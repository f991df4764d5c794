"""Chaos check: real web and worker processes on PostgreSQL and Redis, killed with SIGKILL midway.

Starts the processes of docs/architecture.md ("Processes") in a throwaway
PostgreSQL database and Redis database 13: two gunicorn web processes (each its
own master with one worker, deploy/gunicorn.conf.py) and two django-q2 clusters
(`manage.py qcluster`, one worker each). Texts go to the recording SMS backend
(sms/backends/recording.py), which writes every accepted text to one file shared
by all processes.

1. Throughput: signed SIU messages over HTTP to one web process, then to both.
2. Chaos: signed SIU messages (each a new appointment, so a confirmation text is
   due at once), provider launches against the sandbox EHR, and delivery
   callbacks for every recorded text, all at once; midway one web worker and
   one whole django-q2 cluster are killed with SIGKILL, and the cluster started
   again. A message whose connection dropped is sent again, as an interface
   engine does.
3. Drain: wait until every due text went out (a text whose dispatcher died is
   reconciled after its lease, SMS_SEND_LEASE_SECONDS, by the sweeper).

Then it prints and checks: every accepted message stored exactly once, every
text sent exactly once and marked delivered by its callback, no row in an
in-progress state past its lease, 0 non-ACK answers to valid messages, every
launch reaching its meeting. Exit status 1 when a check fails.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python bench/chaos.py [--messages 120] [--chaos-seconds 40]

DATABASE_URL names the server (a database `chaos_<random>` is created there and
dropped at the end); REDIS_URL's database is emptied first.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlparse
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TENANT_ID = "77777777-7777-4777-8777-777777777777"
# A zone where it is around noon now, so no confirmation waits for the end of quiet hours.
_offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12
ZONE = f"Etc/GMT{-_offset:+d}"
FLAVOR = "r4-generic"
SEND_LEASE_SECONDS = 30
TASK_TIMEOUT = 15


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=120, help="messages per throughput phase")
    parser.add_argument("--chaos-seconds", type=float, default=40.0, help="length of the load with the kills")
    parser.add_argument("--clients", type=int, default=4, help="concurrent senders")
    parser.add_argument(
        "--rate", type=float, default=8.0,
        help="messages per second during the chaos (each means a text to send: the run stays a few minutes)",
    )
    parser.add_argument("--drain-seconds", type=float, default=200.0, help="longest wait for due texts")
    return parser.parse_args()


ARGS = parse_args()
SERVER_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
if not SERVER_URL.startswith("postgres"):
    sys.exit("bench/chaos.py needs PostgreSQL: set DATABASE_URL=postgres://user@host:5432/postgres")
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")
DB_NAME = f"chaos_{secrets.token_hex(4)}"
WORK = Path(tempfile.mkdtemp(prefix="chaos-"))
WEB_PORTS = [free_port(), free_port()]
WEB = [f"http://127.0.0.1:{port}" for port in WEB_PORTS]

from cryptography.fernet import Fernet  # noqa: E402

ENV = {
    **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV"}},
    "DJANGO_SETTINGS_MODULE": "connector.settings",
    "ENV_FILE": "",  # configured here alone, never by a .env or the demo's var/demo.env
    "DEBUG": "true",  # the sandbox EHR is refused in production mode; everything else runs as in production
    "SECRET_KEY": secrets.token_urlsafe(64),
    "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "PHONE_HASH_KEY": secrets.token_urlsafe(48),
    "DATABASE_URL": urlparse(SERVER_URL)._replace(path=f"/{DB_NAME}").geturl(),
    "DB_CONN_MAX_AGE": "60",
    "REDIS_URL": REDIS,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "PUBLIC_BASE_URL": WEB[0],
    "SANDBOX_EHR": "true",
    "EHR_INSECURE_HOSTS": "127.0.0.1,localhost",
    "MEETING_BACKEND": "connector.meetings.locmem.LocmemMeetingBackend",
    "SMS_BACKEND": "sms.backends.recording.RecordingSmsBackend",
    "SMS_RECORDING_FILE": str(WORK / "texts.jsonl"),
    "SMS_RATE_PER_NUMBER": "100",
    "SMS_SEND_LEASE_SECONDS": str(SEND_LEASE_SECONDS),
    "Q_TIMEOUT": str(TASK_TIMEOUT),
    "Q_WORKERS": "1",
    "LOG_LEVEL": "WARNING",
    "HL7_FEED_SETUP_CACHE_SECONDS": "10",
}
os.environ.update(ENV)

import psycopg  # noqa: E402

with psycopg.connect(SERVER_URL, autocommit=True) as admin:
    admin.execute(f'CREATE DATABASE "{DB_NAME}"')

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
import requests  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from tests.support.hl7_feed import make_certificate, make_key, pem, sign  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the organization ------------------------------------------------------------------------


def seed():
    from django.contrib.auth import get_user_model

    from connector.models import ClinicianLink, EndpointStatus, FhirEndpoint
    from connector.sandbox_ehr.seed import seed_sandbox_ehr
    from sms.models import NumberState, PhoneNumber, SmsConsent, SmsSettings, TollFreeVerification
    from sms.services.certificates import certificate_upload
    from tenants.models import Tenant, TenantStatus
    from tenants.scoping import tenant_scope

    seed_sandbox_ehr()
    tenant = Tenant.objects.create(
        name="Chaos Health",
        microsoft_tenant_id=TENANT_ID,
        ehr_vendor="epic",
        data_region="americas",
        status=TenantStatus.ENABLED,
    )
    key = make_key("p256")
    certificate_upload(tenant=tenant, environment="test", data=pem(make_certificate(key)), uploaded_by=None)
    iss = f"{WEB[0]}/sandbox-ehr/fhir/{FLAVOR}"
    now = timezone.now()
    clinician = get_user_model().objects.create_user(username="chaos-clinician")
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.create(
            tenant=tenant, environment="test", time_zone=ZONE, status=EndpointStatus.APPROVED,
            label="Chaos", base_url=iss,
        )
        SmsConsent.objects.create(tenant=tenant, on_behalf_confirmed_at=now, patient_consent_confirmed_at=now)
        number = PhoneNumber.objects.create(
            tenant=tenant, number="+18335550100", state=NumberState.ACTIVE, verification=TollFreeVerification.VERIFIED
        )
        SmsSettings.objects.create(tenant=tenant, endpoint=endpoint, phone_number=number)
        for practitioner in ("pract-smith", "pract-park", "pract-nguyen"):
            ClinicianLink.objects.create(
                tenant=tenant, environment="test", user=clinician, fhir_user=f"{iss}/Practitioner/{practitioner}"
            )
    return tenant, key, iss


def patient_numbers():
    import phonenumbers

    for area, line in itertools.product(range(201, 990), range(100, 200)):
        number = f"+1{area}555{line:04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            yield number


NUMBERS = patient_numbers()
_counter = itertools.count(1)
_counter_lock = threading.Lock()


def new_appointment_message() -> tuple[str, bytes]:
    """A new appointment (SIU^S12) two days ahead, for its own patient number: a confirmation is due now."""
    with _counter_lock:
        number = next(_counter)
        phone = next(NUMBERS)
    local = ZoneInfo(ZONE)
    sent = datetime.now(UTC).astimezone(local)
    start = (sent + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    control_id = f"CHAOS{number:08d}"
    area, rest = phone[2:5], phone[5:]
    segments = [
        f"MSH|^~\\&|EPIC|NVH|VCONNECT|VIRTUALCARE|{sent:%Y%m%d%H%M%S}||SIU^S12^SIU_S12|{control_id}|P|2.5.1|||AL|NE",
        f"SCH|{5100000000 + number}^EPIC|{5100000000 + number}^EPIC|||||VIDEO^Video visit^EPICVT||30|MIN|"
        f"^^30^{start:%Y%m%d%H%M%S}|||||1001^CARTER^AVERY||||1001^CARTER^AVERY|||||Booked",
        f"TQ1|1||||||{start:%Y%m%d%H%M%S}",
        f"PID|1||E{number:07d}^^^EPI^MRN||TESTPATIENT^CHAOS{number}^J||19850314|F|||1 EXAMPLE ST^^SPRINGFIELD^IL"
        f"^62701^USA^H||^PRN^CP^^1^{area}^{rest}||ENG^English^HL70296",
        "PV1|1|O|NVH VIRTUAL MED^^^NVH",
        "RGS|1|A",
        f"AIS|1|A|VIDEO^Video visit^EPICVT|{start:%Y%m%d%H%M%S}|0|MIN|30|MIN",
    ]
    return control_id, "\r".join(segments).encode()


# --- the processes ---------------------------------------------------------------------------


class Processes:
    def __init__(self) -> None:
        self.web: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.log = open(WORK / "processes.log", "ab")  # noqa: SIM115

    def _start(self, command: list[str], **extra) -> subprocess.Popen:
        return subprocess.Popen(
            command, cwd=ROOT, env={**ENV, **extra}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as a whole
        )

    def start_web(self, index: int) -> None:
        process = self._start(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"],
            GUNICORN_BIND=f"127.0.0.1:{WEB_PORTS[index]}", WEB_CONCURRENCY="1", GUNICORN_THREADS="4",
        )
        self.web.append(process)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{WEB[index]}/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"web process {index} did not start; see {WORK / 'processes.log'}")
            time.sleep(0.2)

    def start_worker(self) -> subprocess.Popen:
        process = self._start([sys.executable, "manage.py", "qcluster"])
        self.workers.append(process)
        return process

    @staticmethod
    def children(pid: int) -> list[int]:
        try:
            return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def kill_web_worker(self, index: int) -> int:
        """SIGKILL the worker of web process `index` (its gunicorn master starts a new one)."""
        [worker] = self.children(self.web[index].pid)[:1] or [None]
        if worker is None:
            raise SystemExit("the gunicorn worker to kill was not found")
        os.kill(worker, signal.SIGKILL)
        return worker

    def kill_worker_cluster(self, process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.web + self.workers:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in self.web + self.workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


# --- the load --------------------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: list[str] = []  # control IDs answered AA
        self.non_ack: list[str] = []  # answers to valid messages that were not AA (must stay empty)
        self.dropped = 0  # connections cut (a killed process): the message was sent again
        self.launches_ok = 0
        self.launch_failures: list[str] = []
        self.launch_dropped = 0
        self.callbacks_posted: set[str] = set()
        self.callback_failures: list[str] = []


def send_message(tally: Tally, key, url_of, session: requests.Session) -> None:
    control_id, body = new_appointment_message()
    headers = {"Content-Type": "x-application/hl7-v2+er7", "X-HL7-Signature": sign(body, key)}
    for attempt in itertools.count():
        url = url_of(attempt)
        try:
            response = session.post(url, data=body, headers=headers, timeout=60)
        except requests.RequestException:
            with tally.lock:
                tally.dropped += 1
            time.sleep(0.2)
            continue
        text = response.text
        ok = response.status_code == 200 and f"MSA|AA|{control_id}" in text
        with tally.lock:
            if ok:
                tally.accepted.append(control_id)
            else:
                tally.non_ack.append(f"{control_id}: HTTP {response.status_code} {text[:120]!r}")
        return


def run_senders(
    tally: Tally, key, bases: list[str], *, count: int | None = None, until: float | None = None,
    rate: float | None = None,
):
    feed_path = f"/sms/ingest/{TENANT_ID}/test/"
    remaining = itertools.count()

    def sender(offset: int) -> None:
        session = requests.Session()
        while True:
            if count is not None and next(remaining) >= count:
                return
            if until is not None and time.monotonic() >= until:
                return
            began = time.monotonic()
            first = offset
            url_of = lambda attempt, s=first: f"{bases[(s + attempt) % len(bases)]}{feed_path}"  # noqa: E731
            send_message(tally, key, url_of, session)
            offset += 1
            if rate:  # each sender's share of the rate
                time.sleep(max(0.0, ARGS.clients / rate - (time.monotonic() - began)))

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(ARGS.clients)]
    for thread in threads:
        thread.start()
    return threads


def launches(tally: Tally, iss: str, stop: threading.Event) -> None:
    from connector.sandbox_ehr.services import launch_create

    appointments = itertools.cycle(["appt-1001", "appt-1002", "appt-1003", "appt-1004", "appt-1005"])
    while not stop.is_set():
        launch = launch_create(appointment_id=next(appointments), role="provider", server=FLAVOR)
        session = requests.Session()
        try:
            response = session.get(
                f"{WEB[0]}/launch/provider?" + urlencode({"iss": iss, "launch": launch.launch_id}),
                allow_redirects=False, timeout=60,
            )
            for _ in range(2):
                response = session.get(response.headers["Location"], allow_redirects=False, timeout=60)
        except requests.RequestException:
            with tally.lock:
                tally.launch_dropped += 1
            continue
        except KeyError:
            pass
        location = response.headers.get("Location", "")
        with tally.lock:
            if response.status_code == 302 and "meetings.invalid" in location:
                tally.launches_ok += 1
            else:
                tally.launch_failures.append(f"HTTP {response.status_code} {response.text[:120]!r}")
        time.sleep(0.3)


def delivery_callbacks(tally: Tally, stop: threading.Event) -> None:
    """Post a "delivered" report for every recorded text, as the provider would, to either web process."""
    from sms.backends.recording import recorded_texts

    session = requests.Session()
    turn = itertools.count()
    while True:
        done = stop.is_set()
        new = [t for t in recorded_texts() if t["provider_message_id"] not in tally.callbacks_posted]
        for text in new:
            report = {
                "provider_message_id": text["provider_message_id"], "status": "delivered", "error": "",
                "occurred_at": datetime.now(UTC).isoformat(),
            }
            for attempt in itertools.count():
                try:
                    response = session.post(
                        f"{WEB[(next(turn) + attempt) % 2]}/sms/callbacks/recording/",
                        data=json.dumps({"reports": [report]}),
                        headers={"Content-Type": "application/json", "X-Locmem-Secret": "locmem-callback-secret"},
                        timeout=60,
                    )
                except requests.RequestException:
                    time.sleep(0.2)
                    continue
                if response.status_code != 200:
                    tally.callback_failures.append(f"HTTP {response.status_code}")
                break
            tally.callbacks_posted.add(text["provider_message_id"])
        if done and not new:
            return
        time.sleep(0.3)


# --- the checks ------------------------------------------------------------------------------


def sending_now() -> int:
    from sms.models import MessageState, OutboundMessage
    from tenants.scoping import all_tenants

    with all_tenants():
        return OutboundMessage.objects.filter(state=MessageState.SENDING).count()


def due_or_sending() -> int:
    from sms.models import MessageState, OutboundMessage
    from tenants.scoping import all_tenants

    with all_tenants():
        return OutboundMessage.objects.filter(
            state__in=[MessageState.SENDING]
        ).count() + OutboundMessage.objects.filter(state=MessageState.SCHEDULED, send_at__lte=timezone.now()).count()


def checks(tally: Tally) -> list[tuple[str, bool, str]]:
    from connector.models import EndpointStatus, FhirEndpoint, WriteBack, WriteBackState
    from reports.models import RollupJob, RollupJobState
    from sms.backends.recording import recorded_texts
    from sms.models import Appointment, MessageState, OutboundMessage, ProcessedMessage
    from tenants.scoping import all_tenants

    results = []
    now = timezone.now()
    with all_tenants():
        stored = collections.Counter(
            ProcessedMessage.objects.filter(control_id__startswith="CHAOS").values_list("control_id", flat=True)
        )
        accepted = collections.Counter(tally.accepted)
        not_once = [c for c in accepted if stored[c] != 1]
        unasked = [c for c in stored if c not in accepted]
        appointments = Appointment.objects.filter(external_id__startswith="51").count()
        results.append((
            "every accepted message stored exactly once",
            not not_once and appointments == len(accepted) and max(accepted.values(), default=1) == 1,
            f"{len(accepted)} accepted, {sum(stored.values())} stored, {appointments} appointments, "
            f"{len(not_once)} not stored exactly once, {len(unasked)} stored without an AA (connection cut)",
        ))

        recorded = recorded_texts()
        per_text = collections.Counter((t["to"], t["body"]) for t in recorded)
        twice = [k for k, n in per_text.items() if n > 1]
        sent = OutboundMessage.objects.filter(state__in=[MessageState.SENT, MessageState.DELIVERED])
        sent_ids = set(sent.values_list("provider_message_id", flat=True))
        recorded_ids = {t["provider_message_id"] for t in recorded}
        confirmations = OutboundMessage.objects.filter(kind="confirmation").count()
        unknown = OutboundMessage.objects.filter(state=MessageState.UNKNOWN).count()
        results.append((
            "every text sent exactly once",
            not twice and sent_ids == recorded_ids and len(recorded) == confirmations and unknown == 0,
            f"{len(recorded)} recorded by the provider, {len(sent_ids)} sent or delivered, "
            f"{confirmations} confirmations due, {len(twice)} sent twice, {unknown} outcome unknown",
        ))
        delivered = OutboundMessage.objects.filter(state=MessageState.DELIVERED).count()
        results.append((
            "every text's delivery callback matched",
            delivered == len(recorded) and not tally.callback_failures,
            f"{delivered} delivered of {len(recorded)}; {len(tally.callback_failures)} callbacks refused",
        ))

        past_lease = {
            "texts sending": OutboundMessage.objects.filter(state=MessageState.SENDING, lease_until__lt=now).count(),
            "endpoints validating": FhirEndpoint.objects.filter(
                status=EndpointStatus.VALIDATING, validation_lease_until__lt=now
            ).count(),
            "write-backs sending": WriteBack.objects.filter(
                state=WriteBackState.SENDING, next_attempt_at__lt=now
            ).count(),
            "report builds": RollupJob.objects.filter(state=RollupJobState.BUILDING, lease_until__lt=now).count(),
        }
        still_sending = OutboundMessage.objects.filter(state=MessageState.SENDING).count()
        results.append((
            "no row in progress past its lease",
            not any(past_lease.values()),
            ", ".join(f"{name}: {count}" for name, count in past_lease.items()) + f" (texts sending: {still_sending})",
        ))
    results.append((
        "0 non-ACK answers to valid messages",
        not tally.non_ack,
        f"{len(tally.non_ack)} non-ACK answers{': ' + tally.non_ack[0] if tally.non_ack else ''}; "
        f"{tally.dropped} connections cut by a kill, sent again",
    ))
    results.append((
        "every provider launch reached its meeting",
        tally.launches_ok > 0 and not tally.launch_failures,
        f"{tally.launches_ok} launches, {len(tally.launch_failures)} failed, {tally.launch_dropped} cut"
        + (f": {tally.launch_failures[0]}" if tally.launch_failures else ""),
    ))
    return results


# --- the run ---------------------------------------------------------------------------------


def throughput(tally: Tally, key, bases: list[str]) -> float:
    started = time.monotonic()
    for thread in run_senders(tally, key, bases, count=ARGS.messages):
        thread.join()
    return ARGS.messages / (time.monotonic() - started)


def main() -> int:
    log(f"database {DB_NAME}, Redis {REDIS}, files in {WORK}")
    redis.Redis.from_url(REDIS).flushdb()
    call_command("migrate", verbosity=0)
    call_command("setup_schedules", verbosity=0)
    _tenant, key, iss = seed()
    connections.close_all()
    processes = Processes()
    tally = Tally()
    stop = threading.Event()
    try:
        processes.start_web(0)
        processes.start_web(1)
        # Warm both up (imports, connections, the feed setup) before measuring.
        for thread in run_senders(tally, key, WEB, count=2 * ARGS.clients):
            thread.join()
        one = throughput(tally, key, WEB[:1])
        two = throughput(tally, key, WEB)
        log(f"throughput: 1 web process {one:.1f} messages/s, 2 web processes {two:.1f} messages/s "
            f"(ratio 2/1: {two / one:.2f}; {os.cpu_count()} CPUs shared with everything else)")

        first = processes.start_worker()
        processes.start_worker()
        helpers = [
            threading.Thread(target=launches, args=(tally, iss, stop), daemon=True),
            threading.Thread(target=delivery_callbacks, args=(tally, stop), daemon=True),
        ]
        for helper in helpers:
            helper.start()
        chaos_started = time.monotonic()
        senders = run_senders(tally, key, WEB, until=chaos_started + ARGS.chaos_seconds, rate=ARGS.rate)
        time.sleep(ARGS.chaos_seconds / 2)
        # A request certainly in flight on web process 2 when it dies: the sandbox's slow metadata.
        held_open = {}

        def slow_request() -> None:
            try:
                requests.get(f"{WEB[1]}/sandbox-ehr/fhir/slow/metadata", timeout=60)
                held_open["result"] = "answered"
            except requests.RequestException as error:
                held_open["result"] = f"cut ({type(error).__name__})"

        slow = threading.Thread(target=slow_request, daemon=True)
        slow.start()
        time.sleep(1)
        killed = processes.kill_web_worker(1)
        processes.kill_worker_cluster(first)
        log(f"SIGKILL: web worker {killed} (web process 2) and django-q2 cluster {first.pid} (worker 1); "
            f"texts being sent at that moment: {sending_now()}")
        time.sleep(3)
        processes.start_worker()
        slow.join(timeout=30)
        log(f"the slow request in flight on web process 2: {held_open.get('result')}")
        log("worker 1 started again; gunicorn started web process 2's worker by itself: "
            f"/healthz {requests.get(f'{WEB[1]}/healthz', timeout=30).status_code}")
        for thread in senders:
            thread.join()
        log(f"load over: {len(tally.accepted)} messages accepted, {tally.launches_ok} launches")

        deadline = time.monotonic() + ARGS.drain_seconds
        left = due_or_sending()
        while left and time.monotonic() < deadline:
            log(f"{left} text(s) due or being sent (one left by the killed worker waits for its lease)")
            time.sleep(10)
            left = due_or_sending()
        log(f"texts drained ({left} still due or sending)")
        stop.set()
        for helper in helpers:
            helper.join()
        time.sleep(2)  # the last callbacks' writes
        results = checks(tally)
        failed = 0
        for name, ok, detail in results:
            print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
            failed += not ok
        print(f"chaos: {'all checks passed' if not failed else f'{failed} check(s) failed'}", flush=True)
        return 1 if failed else 0
    finally:
        stop.set()
        processes.stop_all()
        connections.close_all()
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:  # waits for a checkpoint: can be slow
            admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
