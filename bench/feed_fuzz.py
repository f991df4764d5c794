"""Fuzzing the HTTPS scheduling feed at volume: mutated SIU messages, the answers counted by ACK code.

Each message is a valid SIU (the fixtures of fixtures/hl7) broken by one to three
mutations from tests/support/hl7_mutations.py (the same ones tests/test_hl7_fuzz.py
draws with hypothesis), signed, and posted in-process to the project's WSGI
application (`connector.wsgi`), in a throwaway database (PostgreSQL with
DATABASE_URL, SQLite otherwise).

Printed: answers by HTTP status and ACK code, the mutations behind each refusal
code, and the two figures that must be 0: answers to a body starting with MSH
that are not an ACK, and failures that reached the catch-all (an ERROR logged
by the feed, or a 500).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector .venv/bin/python bench/feed_fuzz.py
    .venv/bin/python bench/feed_fuzz.py --messages 5000 --seed 7        # SQLite, quicker
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connector.settings")
os.environ.setdefault("LOG_LEVEL", "CRITICAL")

from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from bench.sms_ingest_bench import TENANT_ID, feed_environ, set_up  # noqa: E402 - sets Django up


class ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--key", choices=["rsa2048", "p256"], default="p256")
    args = parser.parse_args()
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(args) -> None:
    import hl7

    from connector.wsgi import application
    from tests.support.hl7_feed import sign
    from tests.support.hl7_mutations import mutate

    _tenant, key = set_up(args.key)
    errors = ErrorCounter()
    feed_logger = logging.getLogger("sms.hl7")
    feed_logger.addHandler(errors)
    feed_logger.setLevel(logging.ERROR)
    logging.getLogger("django.request").disabled = True  # a line per 400 and 413 otherwise
    url = f"/sms/ingest/{TENANT_ID}/test/"
    rng = random.Random(args.seed)
    answers: collections.Counter[str] = collections.Counter()
    mutations_by_answer: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    without_ack = server_errors = 0
    started = time.perf_counter()
    for serial in range(args.messages):
        body, applied = mutate(rng, serial)
        environ = feed_environ(url, body, sign(body, key))
        status: list[str] = []
        text = b"".join(application(environ, lambda line, headers, status=status: status.append(line)))
        code = status[0].split()[0]
        answer = f"HTTP {code}"
        if code == "500":
            server_errors += 1
        try:
            ack = hl7.parse(text.decode("utf-8"))
            answer += " " + str(ack.segment("MSA")(1))
        except Exception:  # noqa: BLE001 - not an ACK: counted below
            if body.lstrip(b"\xef\xbb\xbf\x0b \t\r\n").startswith((b"MSH", b"FHS", b"BHS")):
                without_ack += 1
            answer += " (no ACK: not HL7)"
        answers[answer] += 1
        for name in applied:
            mutations_by_answer[answer][name] += 1
        if (serial + 1) % 10_000 == 0:
            so_far = ", ".join(f"{answer} {count}" for answer, count in answers.most_common())
            print(
                f"  {serial + 1} messages, {time.perf_counter() - started:.0f} s: {so_far}; "
                f"without an ACK {without_ack}, catch-all {errors.count}, 500 {server_errors}",
                flush=True,
            )
    elapsed = time.perf_counter() - started
    print(
        f"\n{args.messages} mutated SIU messages in {elapsed:.0f} s ({args.messages / elapsed:.0f}/s), "
        f"database {connection.vendor}"
    )
    print("answers:")
    for answer, count in answers.most_common():
        top = ", ".join(f"{name} {n}" for name, n in mutations_by_answer[answer].most_common(4))
        print(f"  {answer:<28} {count:>7}   ({top})")
    print(f"answers to an MSH body without an ACK: {without_ack}")
    print(f"failures that reached the catch-all (ERROR logged): {errors.count}; HTTP 500: {server_errors}")


if __name__ == "__main__":
    main()
