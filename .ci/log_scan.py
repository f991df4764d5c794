"""Scan the log lines a test run emitted for personal data and credentials.

The audit's log scan, in CI: `.ci/run` points LOG_FILE at a file (connector/settings.py
adds a handler writing to it, through the same redaction filter as stdout), runs the test
suite, then runs this script over the file. It fails on any line with

- a phone number (E.164, or a national format such as (206) 555-0100 or 206-555-0100),
- a FHIR reference to a patient (Patient/123) or a search naming one (?patient=123),
- a JSON Web Token (eyJ...eyJ...),
- one of this project's API tokens (ehc_...).

Its patterns are its own, not connector/log_redaction.py's: it checks what the redaction
actually let through. Usage: python .ci/log_scan.py LOG_FILE [LOG_FILE ...]; exit 1 on a find,
2 when a file is missing or empty (a scan of nothing proves nothing).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FINDINGS: dict[str, re.Pattern[str]] = {
    # +14155550100, +44 20 7946 0958: a plus, then 8 to 15 digits with optional separators.
    "phone number (E.164)": re.compile(r"(?<![\w+])\+\d(?:[ .-]?\d){7,14}(?![\w-])"),
    # (206) 555-0100, 206-555-0100, 206.555.0100, 206 555 0100.
    "phone number (national)": re.compile(r"(?<![\w.:/-])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w-])"),
    "FHIR patient reference": re.compile(r"\bPatient/(?!\[redacted\])[A-Za-z0-9.-]{1,64}"),
    "FHIR search naming a patient": re.compile(
        r"(?i)[?&;](?:patient|subject)(?::[\w.]+)?=(?!\[redacted\])[^&\s\"]+"
    ),
    "JSON Web Token": re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    "API token": re.compile(r"\behc_[0-9a-f]{8}_[A-Za-z0-9_-]{10,}"),
}


def scan(lines) -> list[tuple[int, str, str]]:
    """[(line number, kind, the match)] for every finding."""
    found = []
    for number, line in enumerate(lines, start=1):
        for kind, pattern in FINDINGS.items():
            for match in pattern.finditer(line):
                found.append((number, kind, match.group(0)))
    return found


def _masked(value: str) -> str:
    """Enough of a finding to locate it, not enough to leak it again in CI's output."""
    return value[:4] + "…" if len(value) > 6 else "…"


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: log_scan.py LOG_FILE [LOG_FILE ...]", file=sys.stderr)
        return 2
    total_lines, findings = 0, 0
    for name in paths:
        path = Path(name)
        if not path.is_file() or path.stat().st_size == 0:
            print(
                f"log scan: {name} is missing or empty: the test run wrote no log lines to it",
                file=sys.stderr,
            )
            return 2
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        total_lines += len(lines)
        for number, kind, value in scan(lines):
            findings += 1
            print(f"{name}:{number}: {kind}: {_masked(value)}")
    print(f"log scan: {total_lines} lines, {findings} finding{'s' if findings != 1 else ''}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
