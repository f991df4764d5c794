"""Two regions on one machine: every request ends in the right one, and no data crosses.

Starts two deployments of the connector (Americas on one port, Europe on another), each
with its own PostgreSQL database and Redis database, configured as two regions sharing a
lookup secret. Puts one organization in each, then sends to the WRONG region's host: an
API call, an EHR launch, a scheduling message and a signed lookup without the secret; and
as support staff, opens the directory of every region. Each must end in the right region
(421 with the right base URL, or a redirect there), never with data. Finally it scans the
Americas database (a plain pg_dump) for the European organization's identifiers (tenant
ID, endpoint URL, appointment ID) and expects none.

    .venv/bin/python .ci/two_regions.py     # needs PostgreSQL on 127.0.0.1:5432, Redis on 6379

Exit status 0 when every check holds; each check prints one line.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG = "postgres://postgres@127.0.0.1:5432"
SECRET = secrets.token_urlsafe(40)

US_TID = "aaaaaaaa-1111-4111-8111-111111111111"
EU_TID = "bbbbbbbb-2222-4222-8222-222222222222"
EU_ISS = "https://fhir.klinikum-nord.example/api/FHIR/R4"
US_ISS = "https://fhir.us-general.example/api/FHIR/R4"
EU_APPOINTMENT = "EU-APPT-58213"

SEED = """
from django.contrib.auth import get_user_model
from connector.models import EndpointStatus, FhirEndpoint
from sms.models import Appointment
from tenants.models import Membership, Role, Tenant, TenantStatus
from tenants.scoping import tenant_scope
from tenants.services import api_token_create
from django.utils import timezone
tenant = Tenant.objects.create(name="{name}", microsoft_tenant_id="{tid}", ehr_vendor="epic",
                               data_region="{region}", status=TenantStatus.ENABLED)
get_user_model().objects.create_user(username="support", password="{password}", is_staff=True, is_superuser=True)
with tenant_scope(tenant):
    endpoint = FhirEndpoint.objects.create(tenant=tenant, base_url="{iss}", environment="production",
                                           label="Main", status=EndpointStatus.APPROVED)
    Appointment.objects.create(tenant=tenant, endpoint=endpoint, external_id="{appointment}",
                               start=timezone.now(), end=timezone.now(), state_as_of=timezone.now())
    print("TOKEN=" + api_token_create(tenant=tenant, name="ci", scope="read", created_by=None).raw)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Region:
    def __init__(self, name: str, database: str, redis_db: int, port: int):
        self.name, self.database, self.port = name, database, port
        self.base = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"{PG}/{database}",
            "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "CONNECTOR_REGION": name,
            "PUBLIC_BASE_URL": self.base,
            "REGION_LOOKUP_SECRET": SECRET,
            "DEBUG": "true",
            "ENV_FILE": "/dev/null",
        }
        self.server: subprocess.Popen | None = None

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{self.name}: manage.py {args[0]} failed:\n{done.stderr[-2000:]}")
        return done

    def start(self) -> None:
        self.server = subprocess.Popen(
            [PYTHON, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                requests.get(f"{self.base}/healthz", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise SystemExit(f"{self.name} did not start on {self.base}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=10)


failures: list[str] = []


def check(label: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {label}{'' if ok else ': ' + detail}")
    if not ok:
        failures.append(label)


def recreate_database(name: str) -> None:
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", f"{PG}/postgres", "-qc", sql], check=True, capture_output=True)


def main() -> int:
    us = Region("americas", "connector_region_americas", 13, free_port())
    eu = Region("europe", "connector_region_europe", 14, free_port())
    regions_text = f"americas={us.base}\neurope={eu.base}"
    tokens = {}
    for region, tid, iss, name in ((us, US_TID, US_ISS, "US General"), (eu, EU_TID, EU_ISS, "Klinikum Nord")):
        region.env["CONNECTOR_REGIONS"] = regions_text
        recreate_database(region.database)
        region.manage("migrate", "--no-input")
        appointment = EU_APPOINTMENT if region is eu else "US-APPT-1"
        seeded = region.manage(
            "shell",
            "-c",
            SEED.format(
                name=name, tid=tid, region=region.name, iss=iss, appointment=appointment, password="ci-pass-phrase-1"
            ),
        )
        tokens[region.name] = re.search(r"TOKEN=(\S+)", seeded.stdout).group(1)
    try:
        us.start()
        eu.start()
        run_checks(us, eu, tokens)
    finally:
        us.stop()
        eu.stop()
    dump = subprocess.run(
        ["pg_dump", "--data-only", f"{PG}/{us.database}"], check=True, capture_output=True, text=True
    ).stdout
    for label, value in (("tenant ID", EU_TID), ("endpoint URL", EU_ISS), ("appointment ID", EU_APPOINTMENT)):
        check(f"the Americas database holds no trace of the European {label}", value not in dump)
    check("the Americas database does hold its own organization (the scan sees data)", US_TID in dump)
    print("two-region check:", "FAILED " + ", ".join(failures) if failures else "passed")
    return 1 if failures else 0


def run_checks(us: Region, eu: Region, tokens: dict) -> None:
    # The API at the wrong region: 421 with the right base URL, no data.
    wrong = requests.get(
        f"{us.base}/api/v1/tenants/{EU_TID}/endpoints/", headers={"Authorization": f"Bearer {tokens['europe']}"}
    )
    body = wrong.json()
    check(
        "an API call at the wrong region gets 421 naming the right base URL",
        wrong.status_code == 421 and body["error"]["base_url"] == eu.base and EU_ISS not in wrong.text,
        f"{wrong.status_code} {wrong.text[:200]}",
    )
    right = requests.get(
        f"{eu.base}/api/v1/tenants/{EU_TID}/endpoints/", headers={"Authorization": f"Bearer {tokens['europe']}"}
    )
    check("the same call at the right region answers with data", right.status_code == 200 and EU_ISS in right.text)

    # An EHR launch at the wrong region is redirected to the right host.
    launch = requests.get(
        f"{us.base}/launch/provider", params={"iss": EU_ISS, "launch": "xyz"}, allow_redirects=False
    )
    check(
        "an EHR launch at the wrong region is redirected to the right host",
        launch.status_code == 302 and launch.headers["Location"].startswith(f"{eu.base}/launch/provider?"),
        f"{launch.status_code} {launch.headers.get('Location')}",
    )

    # A scheduling message at the wrong region: 421, never an ACK (nothing processed there).
    hl7 = requests.post(
        f"{us.base}/sms/ingest/{EU_TID}/production/",
        data=b"MSH|^~\\&|EPIC|KN|CONNECTOR|KN|20261205120000||SIU^S12|1|P|2.5.1\r",
        headers={"Content-Type": "application/hl7-v2"},
    )
    check(
        "a scheduling message at the wrong region gets 421 with the right base URL",
        hl7.status_code == 421 and hl7.json()["error"]["base_url"] == eu.base,
        f"{hl7.status_code} {hl7.text[:200]}",
    )

    # The lookup answers only with a valid signature.
    unsigned = requests.get(f"{eu.base}/internal/regions/lookup", params={"tenant_id": EU_TID})
    check("the internal lookup refuses an unsigned call", unsigned.status_code == 403 and "europe" not in unsigned.text)

    # Support staff: the region in the header, and the directory of both regions.
    session = requests.Session()
    session.get(f"{us.base}/admin/login/")
    signed_in = session.post(
        f"{us.base}/admin/login/?next=/admin/",
        data={
            "username": "support",
            "password": "ci-pass-phrase-1",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": f"{us.base}/admin/login/"},
    )
    check("every admin page names the region", "Region: Americas" in signed_in.text, signed_in.text[:200])
    directory = session.get(f"{us.base}/admin/region-directory/")
    check(
        "the directory lists both regions' organizations",
        "US General" in directory.text and "Klinikum Nord" in directory.text and EU_TID in directory.text,
        directory.text[:300],
    )


if __name__ == "__main__":
    sys.exit(main())
