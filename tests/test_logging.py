"""Logs are one JSON line per event, carry the request id, and never carry secrets or phones."""

import io
import json
import logging

import pytest

from connector.log_redaction import OneLineJsonFormatter, RedactingFilter, redact
from connector.request_id import RequestIdFilter
from tests.conftest import signed_in


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("texting +1 415 555 0100 now", "415 555 0100"),
        ("texting (415) 555-0100 now", "555-0100"),
        ("texting +14155550100 now", "4155550100"),
        ("texting 415.555.0100 now", "555.0100"),
        ("texting +44 20 7946 0958 now", "7946 0958"),
        ("Authorization: Bearer abcDEF123456.xyz", "abcDEF123456"),
        ("header basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("got ehc_1a2b3c4d_AbCdEfGhIjKlMnOpQrStUv", "AbCdEfGhIjKlMnOpQrStUv"),
        ("id_token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("jwt=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl end", "eyJzdWIiOiIxMjMifQ"),
        ("login password=hunter2&next=/", "hunter2"),
        ('{"client_secret": "s3cr3t-value", "a": 1}', "s3cr3t-value"),
        ("refresh_token: rt-abc-123", "rt-abc-123"),
        ("code=SplxlOBeZQQYbYS6WxSbIA&state=x", "SplxlOBeZQQYbYS6WxSbIA"),
        ("sessionid=abcdef0123456789", "abcdef0123456789"),
    ],
)
def test_it_removes_phone_numbers_tokens_and_secrets(text, secret):
    redacted = redact(text)

    assert secret not in redacted
    assert "[redacted]" in redacted or "[phone]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "nightly roll-up for 2026-11-21 done in 312 ms",
        "at 2026-11-22 01:49:11 UTC",
        "tenant 72f988bf-86f1-41af-91ab-2d7cd011db47 enabled",
        "tenant 11111111-1111-4111-8111-111111111111 enabled",
        "GET /api/v1/tenants/ 200",
        "access request 42 approved; tenant 7 enabled",
    ],
)
def test_it_leaves_dates_ids_and_paths_alone(text):
    assert redact(text) == text


def test_the_filter_redacts_the_formatted_message_and_its_arguments():
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "sms to %s with %s", ("+1 415 555 0100", "ehc_aa_bbbbbbbbbbbb"), None
    )

    RedactingFilter().filter(record)

    assert record.getMessage() == "sms to [phone] with [redacted]"
    assert record.args == ()


def test_the_filter_redacts_exception_text():
    try:
        raise ValueError("could not text +1 415 555 0100")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())

    RedactingFilter().filter(record)
    line = json.loads(OneLineJsonFormatter().format(record))

    assert "415 555 0100" not in line["exception"]
    assert "ValueError: could not text [phone]" in line["exception"]


def test_the_formatter_writes_one_json_line_with_the_request_id():
    record = logging.LogRecord("tenants.services", logging.WARNING, __file__, 1, "first\nsecond", (), None)
    RequestIdFilter().filter(record)
    record.request_id = "abc12345"

    line = OneLineJsonFormatter().format(record)

    assert "\n" not in line
    event = json.loads(line)
    assert event["level"] == "WARNING"
    assert event["logger"] == "tenants.services"
    assert event["request_id"] == "abc12345"
    assert event["message"] == "first\nsecond"
    assert event["time"].endswith("+00:00")


@pytest.fixture
def log_lines():
    """The lines the configured stdout handler would write (its filters and formatter)."""
    root = logging.getLogger()
    configured = next(h for h in root.handlers if isinstance(h.formatter, OneLineJsonFormatter))
    assert {type(f) for f in configured.filters} == {RequestIdFilter, RedactingFilter}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    for log_filter in configured.filters:
        handler.addFilter(log_filter)
    handler.setFormatter(configured.formatter)
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


def test_the_configured_handler_redacts_and_adds_the_request_id(log_lines):
    logging.getLogger("sms.test").warning("sms to %s failed", "+1 415 555 0100")

    (event,) = [e for e in log_lines() if e["logger"] == "sms.test"]
    assert event["message"] == "sms to [phone] failed"
    assert "request_id" in event


def test_log_lines_written_during_a_request_carry_its_response_request_id(client, org_a, admin_a, log_lines):
    signed_in(client, admin_a)

    response = client.post("/portal/api-tokens/", {"name": "Warehouse", "scope": "read"})

    request_id = response["X-Request-ID"]
    events = [e for e in log_lines() if e["logger"] == "tenants.services"]
    assert [e["request_id"] for e in events] == [request_id]
    assert "API token" in events[0]["message"]
    assert response.context["issued"].raw not in json.dumps(log_lines())


def test_each_request_gets_its_own_request_id(client, db, log_lines):
    first = client.get("/healthz")
    second = client.get("/healthz")

    assert first["X-Request-ID"] != second["X-Request-ID"]
    assert len(first["X-Request-ID"]) == 32


def test_a_not_found_log_line_carries_the_request_id(client, db, log_lines):
    response = client.get("/no-such-page/")

    events = [e for e in log_lines() if e["logger"] == "django.request"]
    assert events
    assert {e["request_id"] for e in events} == {response["X-Request-ID"]}


def test_signed_links_and_oauth_parameters_are_redacted_from_access_logs():
    from connector.log_redaction import redact

    assert (
        redact('"GET /join/eyJ2Ijoi.abc:1x/lobby/ HTTP/1.1" 200')
        == '"GET /join/[redacted]/lobby/ HTTP/1.1" 200'
    )
    assert "secret" not in redact("GET /visit/v1/console/?t=secret-token&x=1")
    assert (
        redact("GET /launch/callback?code=abc&state=xyz")
        == "GET /launch/callback?code=[redacted]&state=[redacted]"
    )
    assert redact("GET /launch/link/some.signed:token/") == "GET /launch/link/[redacted]/"


def test_status_codes_sizes_and_ip_addresses_are_not_mistaken_for_phone_numbers():
    from connector.log_redaction import redact

    assert redact('"GET /healthz HTTP/1.1" 200 16') == '"GET /healthz HTTP/1.1" 200 16'
    assert redact("EHR GET 127.0.0.1 answered 200 in 84 ms") == "EHR GET 127.0.0.1 answered 200 in 84 ms"
    assert redact("texted 4155550100 and +4915112345678") == "texted [phone] and [phone]"


# --- FHIR identifiers, urllib3, the console SMS backend (issue 12, item 8) ---------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET /api/FHIR/R4/Patient/eRztxMVTS0rsvc3wVeUvSew3 200", "eRztxMVTS0rsvc3wVeUvSew3"),
        ("fhirUser https://ehr.example.org/R4/Practitioner/pract-77", "pract-77"),
        ('"GET /R4/Appointment?patient=abc-123&date=ge2026-01-01 HTTP/1.1" 200', "abc-123"),
        ("search Encounter?subject=Patient%2F42&_count=5", "Patient%2F42"),
        ("Patient?identifier=urn:oid:1.2.3|MRN778899", "MRN778899"),
        ("reference to RelatedPerson/rp9 and Encounter/enc-5", "rp9"),
    ],
)
def test_fhir_references_and_search_parameters_naming_people_are_redacted(text, secret):
    assert secret not in redact(text)


def test_fhir_paths_without_an_identifier_are_left_alone():
    assert redact("GET /R4/metadata 200") == "GET /R4/metadata 200"
    assert redact("GET /R4/.well-known/smart-configuration 200") == "GET /R4/.well-known/smart-configuration 200"


def test_urllib3_stays_quiet_even_at_debug(settings):
    import logging.config

    assert logging.getLogger("urllib3").getEffectiveLevel() >= logging.WARNING
    logging.config.dictConfig({**settings.LOGGING, "root": {**settings.LOGGING["root"], "level": "DEBUG"}})
    try:
        assert logging.getLogger("urllib3.connectionpool").getEffectiveLevel() >= logging.WARNING
    finally:
        logging.config.dictConfig(settings.LOGGING)


def test_the_console_sms_backend_writes_through_the_redacting_logger(log_lines):
    from sms.backends.console import ConsoleSmsBackend

    ConsoleSmsBackend().send(
        from_number="+18335550100",
        to_number="+14155550123",
        body="Org A: join your visit at https://connector.example.org/join/eyJ2IjoxfQ.sig:1x/ (call +1 415 555 0199)",
    )

    (event,) = [e for e in log_lines() if e["logger"] == "sms.backends.console"]
    assert "/join/[redacted]/" in event["message"]
    assert "eyJ2IjoxfQ" not in event["message"] and "555 0199" not in event["message"]
    assert "…0123" in event["message"]
