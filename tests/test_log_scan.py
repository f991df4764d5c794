"""CI's log scan (.ci/log_scan.py): it finds what must never be logged, and passes what the
redaction filter makes of it, so a leak fails CI and a clean run does not."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
from django.conf import settings

from connector.log_redaction import OneLineJsonFormatter, RedactingFilter

_spec = importlib.util.spec_from_file_location("log_scan", Path(settings.BASE_DIR) / ".ci" / "log_scan.py")
log_scan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(log_scan)

LEAKS = {
    "phone number (E.164)": "texting +14155550123 now",
    "phone number (national)": "call (206) 555-0100 back",
    "FHIR patient reference": "GET https://fhir.example.org/r4/Patient/pat-alex",
    "FHIR search naming a patient": "GET /r4/Appointment?patient=pat-alex&date=ge2026-01-01",
    "JSON Web Token": "id_token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGV4In0.c2lnbmF0dXJl",
    "API token": "calling with ehc_0a1b2c3d_abcdefghijklmnopqrstuvwxyz012345",
}


@pytest.mark.parametrize("kind, line", LEAKS.items())
def test_the_scan_finds_each_kind_of_leak(kind, line):
    assert kind in [found_kind for _, found_kind, _ in log_scan.scan([line])]


@pytest.mark.parametrize(
    "line",
    [
        '{"time": "2026-12-06T02:11:44.982872+00:00", "level": "INFO", "request_id": "8f14e45f-ceea-4672-9a1c"}',
        "endpoint 42 validated in 1234 ms; visit 2026-11-21 10:30:00; tenant 11111111-1111-4111-8111-111111111111",
        "API token 0a1b2c3d created for tenant 7",
        "GET /api/v1/tenants/7/?page=2 200 1532",
    ],
)
def test_ordinary_lines_pass(line):
    assert log_scan.scan([line]) == []


@pytest.mark.parametrize("kind, line", LEAKS.items())
def test_what_the_redaction_filter_emits_passes_the_scan(kind, line):
    record = logging.LogRecord("connector", logging.INFO, __file__, 1, line, None, None)
    RedactingFilter().filter(record)
    emitted = OneLineJsonFormatter().format(record)

    assert json.loads(emitted)  # one JSON line
    assert log_scan.scan([emitted]) == [], emitted


def test_the_command_fails_on_a_leak_and_on_an_empty_file(tmp_path, capsys):
    clean, leaky, empty = tmp_path / "clean.log", tmp_path / "leaky.log", tmp_path / "empty.log"
    clean.write_text('{"message": "endpoint 3 validated"}\n')
    leaky.write_text('{"message": "sent to +14155550123"}\n')
    empty.write_text("")

    assert log_scan.main([str(clean)]) == 0
    assert log_scan.main([str(clean), str(leaky)]) == 1
    assert "+14155550123" not in capsys.readouterr().out  # the report does not leak it again
    assert log_scan.main([str(empty)]) == 2
    assert log_scan.main([str(tmp_path / "missing.log")]) == 2
