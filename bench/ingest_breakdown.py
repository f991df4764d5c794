"""Where one scheduling message's CPU goes, measured A/B in one process.

`bench/sms_ingest_bench.py` gives the throughput; on this shared VM its figure swings by
a third from one run to the next (the same code has cost 6.2 and 9.7 ms of Python CPU
per message within the hour), so comparing two runs cannot tell a 0.2 ms change from
noise. This script posts the same kind of messages (new appointments and reschedules,
2 to 1) through the project's WSGI application in one process and, block by block,
switches one part of the work off: every variant sees the same machine, the same
database size and the same mix, so the differences are the parts' costs.

Variants (each a share of the messages, interleaved in blocks of three):

- `full`: what production does;
- `no middleware`: the view called directly (the cost of Django's handler and the
  project's middleware list);
- `no ACK`: the ACK replaced by a constant (the cost of building it with python-hl7);
- `no texts`: appointments stored, no texts computed or stored;
- `texts not stored`: texts computed, the one bulk insert skipped.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector .venv/bin/python bench/ingest_breakdown.py
    DATABASE_URL=... .venv/bin/python bench/ingest_breakdown.py --messages 3000

Only the workers' Python CPU is counted (time.process_time), not PostgreSQL's.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sms_ingest_bench as ingest_bench  # noqa: E402  (sets Django up as the throughput bench does)
from django.core.handlers.wsgi import WSGIRequest  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--messages", type=int, default=2000, help="new appointments; half as many reschedules"
    )
    args = parser.parse_args()
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(args.messages)
    finally:
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)


def messages(count: int) -> list[bytes]:
    """S12, S12, S13, S12, S12, S13, ...: every block of three has the 2-to-1 mix."""
    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for number in range(count):
        start = now + timedelta(days=3, minutes=7 * number)
        out.append(ingest_bench.siu(number, trigger="S12", sent=now - timedelta(minutes=10), start=start))
        if number % 2 == 1:
            moved = number - 1
            out.append(
                ingest_bench.siu(
                    moved,
                    trigger="S13",
                    sent=now - timedelta(minutes=5),
                    start=now + timedelta(days=3, minutes=7 * moved + 60),
                )
            )
    return out


def run(count: int) -> None:
    import sms.hl7.ingest as ingest_module
    import sms.hl7.views as views_module
    import sms.services.appointments as appointments_module
    from connector.wsgi import application
    from tests.support.hl7_feed import sign

    tenant, key = ingest_bench.set_up("rsa2048")
    signed = [(body, sign(body, key)) for body in messages(count)]
    url = f"/sms/ingest/{ingest_bench.TENANT_ID}/test/"

    def environ(body: bytes, signature: str) -> dict:
        return ingest_bench.feed_environ(url, body, signature)

    def full(body: bytes, signature: str) -> None:
        status = []
        text = b"".join(application(environ(body, signature), lambda line, headers: status.append(line)))
        assert status[0].startswith("200") and b"MSA|AA|" in text, (status, text[:300])

    def no_middleware(body: bytes, signature: str) -> None:
        response = views_module.ingest(WSGIRequest(environ(body, signature)), ingest_bench.TENANT_ID, "test")
        assert b"MSA|AA|" in response.content

    def without(module, name: str, replacement):
        def variant(body: bytes, signature: str) -> None:
            real = getattr(module, name)
            setattr(module, name, replacement)
            try:
                full(body, signature)
            finally:
                setattr(module, name, real)

        return variant

    texts_manager = appointments_module.OutboundMessage.objects
    variants = {
        "full": full,
        "no middleware": no_middleware,
        "no ACK": without(ingest_module, "ack_build", lambda *args, **kwargs: "MSH|^~\\&|\rMSA|AA|-\r"),
        "no texts": without(appointments_module, "_schedule_texts", lambda *args, **kwargs: []),
        "texts not stored": without(texts_manager, "bulk_create", lambda objs, **kwargs: objs),
    }
    names = list(variants)
    warmup = 3 * 20
    for body, signature in signed[:warmup]:
        full(body, signature)
    cpu = dict.fromkeys(names, 0.0)
    counted = dict.fromkeys(names, 0)
    for index, (body, signature) in enumerate(signed[warmup:]):
        name = names[(index // 3) % len(names)]  # a block of three (S12, S12, S13) per variant
        before = time.process_time()
        variants[name](body, signature)
        cpu[name] += time.process_time() - before
        counted[name] += 1
    ms = {name: cpu[name] * 1000 / counted[name] for name in names}
    print(f"database: {connection.vendor}; messages: {sum(counted.values())} (S12 and S13, 2 to 1)")
    print(f"Python CPU per message, all of it: {ms['full']:.2f} ms")
    for name in names[1:]:
        part = ms["full"] - ms[name]
        print(
            f"  {name:<18} {ms[name]:.2f} ms: that part costs {part:.2f} ms ({100 * part / ms['full']:.0f}%)"
        )


if __name__ == "__main__":
    main()
