"""Benchmark: what encrypting EHR user IDs at rest costs the reads that show them (issue 12, item 5).

Creates a throwaway test database with one organization and `--visits` visits,
each with a primary clinician's fhirUser (300 clinicians), stored as the model
stores it: encrypted (`Visit.primary_clinician_ehr_id`) with its keyed hash
beside it. Times, interleaved in the same run:

- reading every visit's clinician ID, decrypted (what the visits report and API do);
- the reference: reading the same rows' plain 64-character hash column, which
  costs the same SQL and transfer without the decryption;
- finding a clinician's link by its fhirUser through the hash (what each launch does),
  against a lookup by primary key.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector_bench .venv/bin/python bench/ehr_id_encryption_bench.py

Goal: decryption adds at most 10 us a row read (a page of 50 report rows: 0.5 ms); the hash lookup
within 2x a primary-key read. The ratio to reading one plain column is printed too: it is the
worst case, a read of nothing but the IDs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connector.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

TENANT_ID = "66666666-6666-4666-8666-666666666666"


def timed(function, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        out.append(time.perf_counter() - started)
    return out


def run(args) -> None:
    from django.contrib.auth import get_user_model

    from connector.models import ClinicianLink, FhirEndpoint, Visit
    from connector.services.launch import clinician_link_find
    from tenants.models import Tenant, TenantStatus
    from tenants.scoping import tenant_scope

    tenant = Tenant.objects.create(
        name="Bench Health",
        microsoft_tenant_id=TENANT_ID,
        ehr_vendor="epic",
        data_region="americas",
        status=TenantStatus.ENABLED,
    )
    user = get_user_model().objects.create_user(username="bench-clinician")
    base = "https://fhir.bench.example/R4"
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.create(
            tenant=tenant, base_url=base, environment="test", label="Bench"
        )
        Visit.objects.bulk_create(
            [
                Visit(
                    tenant=tenant,
                    public_id=f"bench-{n}",
                    endpoint=endpoint,
                    appointment_id=f"APPT-{n}",
                    primary_clinician_ehr_id=f"{base}/Practitioner/dr-{n % 300}",
                )
                for n in range(args.visits)
            ],
            batch_size=2000,
        )
        links = [
            ClinicianLink.objects.create(
                tenant=tenant, environment="test", fhir_user=f"{base}/Practitioner/dr-{n}", user=user
            )
            for n in range(300)
        ]

        def decrypted():
            return list(Visit.objects.values_list("primary_clinician_ehr_id", flat=True))

        def plain():
            return list(Visit.objects.values_list("primary_clinician_ehr_id_hash", flat=True))

        def by_hash():
            for n in range(0, 300, 3):
                clinician_link_find(environment="test", fhir_user=f"{base}/Practitioner/dr-{n}")

        def by_pk():
            for link in links[::3]:
                ClinicianLink.objects.select_related("user").filter(pk=link.pk).first()

        assert decrypted()[0].startswith(base)
        rows_enc, rows_plain, find_hash, find_pk = [], [], [], []
        for _ in range(args.runs):  # interleaved, so load on the machine hits both alike
            rows_enc += timed(decrypted, 1)
            rows_plain += timed(plain, 1)
            find_hash += timed(by_hash, 1)
            find_pk += timed(by_pk, 1)

    read_enc, read_plain = statistics.median(rows_enc), statistics.median(rows_plain)
    hash_ms, pk_ms = (
        statistics.median(find_hash) * 10,
        statistics.median(find_pk) * 10,
    )  # per lookup (100 a run)
    print(
        f"database: {connection.vendor}; {args.visits:,} visits, 300 clinicians; medians of {args.runs} runs"
    )
    print(f"  read every visit's clinician ID, decrypted        {read_enc * 1000:8.1f} ms")
    print(f"  read the same rows' plain hash column (reference)  {read_plain * 1000:8.1f} ms")
    per_row = (read_enc - read_plain) / args.visits * 1e6
    print(
        f"ratio decrypted / plain: {read_enc / read_plain:.2f}x; decryption adds {per_row:.1f} us a row",
        end="",
    )
    print(f"  (goal <= 10 us a row: {'met' if per_row <= 10 else 'NOT met'})")
    print(f"  find a clinician link by fhirUser (hash)           {hash_ms:8.3f} ms")
    print(f"  find a clinician link by primary key (reference)   {pk_ms:8.3f} ms")
    ratio = hash_ms / pk_ms
    print(
        f"ratio hash lookup / primary key: {ratio:.2f}x  (goal <= 2x: {'met' if ratio <= 2 else 'NOT met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visits", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    setup_test_environment()
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=False, serialize=False
    )
    try:
        run(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
