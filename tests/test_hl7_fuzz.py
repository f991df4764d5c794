"""Mutated SIU messages through the HTTPS view and the real MLLP server: always an ACK, never a failure.

hypothesis drives the mutations of tests/support/hl7_mutations.py (truncation,
wrong encoding characters, huge and non-numeric values, bad dates, NUL and
non-UTF-8 bytes, mixed line endings, repeated segments, long fields, batches).
Each transport runs HL7_FUZZ_EXAMPLES examples (1,000 by default, as in CI;
set it lower locally). Run it on PostgreSQL too: NUL bytes only fail there.

Every response to a signed body that starts with MSH is an ACK (AA, AE or AR)
that echoes nothing of the patient; no message reaches the catch-all failure
path (an ERROR in the log), which is kept for the database being unavailable.
"""

from __future__ import annotations

import logging
import os
import random

import hl7
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sms.hl7.mllp import frame
from tests.support.hl7_feed import fixture, sign
from tests.support.hl7_mutations import mutate
from tests.test_hl7_ingest import appointments, post, set_up_feed
from tests.test_mllp import client_a, connect, listener, pki, read_acks  # noqa: F401 - fixtures

EXAMPLES = int(os.environ.get("HL7_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written to the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# What the fixtures hold about the patients: none of it may come back in an answer.
PATIENT_VALUES = (b"QUINN", b"HARPER", b"5550123", b"5550142", b"E1234567", b"harper.quinn", b"19850314")


class ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def feed(org_a):
    return set_up_feed(org_a)


@pytest.fixture
def errors():
    counter = ErrorCounter()
    logger = logging.getLogger("sms.hl7")
    logger.addHandler(counter)
    yield counter.records
    logger.removeHandler(counter)


def claims_hl7(body: bytes) -> bool:
    return body.lstrip(b"\xef\xbb\xbf\x0b \t\r\n").startswith((b"MSH", b"FHS", b"BHS"))


def assert_is_an_ack(answer: bytes, body: bytes) -> str:
    for value in PATIENT_VALUES:
        assert value not in answer, "the answer echoes the message's content"
    ack = hl7.parse(answer.decode("utf-8"))
    code = str(ack.segment("MSA")(1))
    assert code in ("AA", "AE", "AR")
    if code != "AA":
        assert str(ack.segment("ERR")), "a refusal says why"
    return code


_serials = iter(range(10**9))


@pytest.mark.django_db
@FUZZ
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_every_signed_mutated_message_gets_an_ack_over_https(client, feed, errors, seed):
    # Function-scoped fixtures run once for all the examples: one feed, one database transaction.
    body, applied = mutate(random.Random(seed), next(_serials))

    response = client.post(
        feed.url,
        data=body,
        content_type="x-application/hl7-v2+er7",
        HTTP_X_HL7_SIGNATURE=sign(body, feed.key),
    )

    if response.status_code == 400:  # plain text: only for a body that does not even start with MSH
        assert not claims_hl7(body), applied
    else:
        # 413 (too large: not even authenticated) carries an AR too.
        assert response.status_code in (200, 413), (applied, response.status_code)
        assert_is_an_ack(response.content, body)
    assert not errors, (applied, [record.getMessage() for record in errors])


@pytest.mark.django_db(transaction=True)
def test_every_mutated_message_gets_an_ack_over_mllp(pki, listener, client_a, org_a, errors):  # noqa: F811
    server = listener()
    with connect(pki, server, client_a) as connection:

        @FUZZ
        @given(seed=st.integers(min_value=0, max_value=2**32 - 1))
        def one_message(seed):
            body, applied = mutate(random.Random(seed), next(_serials))
            # MLLP cannot carry its own framing bytes inside a message.
            body = body.replace(b"\x0b", b"").replace(b"\x1c", b"")
            # Past 16 times the size limit the listener stops reading and drops the connection
            # (sms/hl7/mllp.py FrameReader: a peer must not keep a worker discarding forever), so
            # such a message can get no ACK by design; up to there an oversized one gets its AR.
            # The HTTPS test above sends them all (413 with an AR).
            assume(len(body) <= 16 * server.max_bytes)
            connection.sendall(frame(body))
            [ack] = read_acks(connection, 1)
            assert_is_an_ack(str(ack).encode(), body)
            assert not errors, (applied, [record.getMessage() for record in errors])

        one_message()


# --- the poison messages seen from real senders, one by one ------------------------------------------

EPIC = "epic_siu_s12_v251.hl7"


def _ack_of(response) -> hl7.Message:
    return hl7.parse(response.content.decode())


def _err_text(ack: hl7.Message) -> str:
    return ack.unescape(str(ack.segment("ERR")(8)))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (b"||30|MIN|", b"||NaN|MIN|", None),  # ignored: the end time in TQ1-8 gives the duration
        (b"||30|MIN|", b"||1e400|MIN|", None),
        (b"||30|MIN|", b"||inf|MIN|", None),
        (b"TQ1|1||||||20270112093000|", b"TQ1|1||||||00010101000000|", "TQ1-7 is out of range"),
        (b"TQ1|1||||||20270112093000|", b"TQ1|1||||||99991231235959+1400|", "TQ1-7 is out of range"),
        (b"|EPC0000100001|", b"|\\X00\\|", "MSH-10 (message control ID) is empty"),  # escaped NUL
        (b"SCH|4000123456^EPIC|", b"SCH|40001\\X00\\23456^EPIC|", None),
        (b"MSH|^~\\&|", b"MSH|^^^^|", "MSH-2 (encoding characters)"),
        (b"MSH|^~\\&|", b"MSH|^~\\^|", "MSH-2 (encoding characters)"),
    ],
)
def test_a_poison_value_gets_an_ack_that_says_what_to_fix(client, feed, errors, old, new, field):

    body = fixture(EPIC).replace(old, new, 1)
    assert body != fixture(EPIC)

    response = post(client, feed, body)

    assert response.status_code == 200
    ack = _ack_of(response)
    if field is None:
        assert str(ack.segment("MSA")(1)) == "AA"
    else:
        assert str(ack.segment("MSA")(1)) in ("AE", "AR")
        assert field in _err_text(ack)
    assert not errors


def test_nul_bytes_are_refused_before_anything_is_stored(client, feed):

    body = fixture(EPIC).replace(b"QUINN", b"QU\x00INN")

    response = post(client, feed, body)

    ack = _ack_of(response)
    assert (str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))) == ("AE", "EPC0000100001")
    assert "NUL bytes" in _err_text(ack)
    assert appointments(feed.tenant) == []


def test_a_message_of_60000_repetitions_is_refused_with_an_ar_before_parsing(client, feed):

    body = fixture(EPIC).replace(b"|ENG^English^HL70296|", b"|" + b"~".join([b"X"] * 30000) + b"|")

    response = post(client, feed, body)

    ack = _ack_of(response)
    assert str(ack.segment("MSA")(1)) == "AR"
    assert "more than" in _err_text(ack)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\r".join([b"NTE|1||note"] * 600), "segments; at most 500"),
        (b"NTE|1||" + b"A" * 9000, "longer than 8192 characters"),
        (b"NTE|1||" + b"~".join([b"A"] * 150), "more than 100 repetitions"),
    ],
)
def test_the_caps_are_refused_with_a_reason(client, feed, body, expected):

    response = post(client, feed, fixture(EPIC) + b"\r" + body)

    ack = _ack_of(response)
    assert str(ack.segment("MSA")(1)) == "AR"
    assert expected in _err_text(ack)


def test_a_batch_is_refused_with_the_same_reason_on_both_transports(client, feed):

    batch = b"FHS|^~\\&|EPIC|NVH\rBHS|^~\\&|EPIC|NVH\r" + fixture(EPIC) + b"\rBTS|1\rFTS|1"

    response = post(client, feed, batch)

    ack = _ack_of(response)
    assert str(ack.segment("MSA")(1)) == "AR"
    assert "batches (FHS/BHS) are not accepted" in _err_text(ack)


def test_a_corrected_resend_with_the_same_control_id_is_processed(client, feed):

    broken = fixture(EPIC).replace(b"TQ1|1||||||20270112093000|", b"TQ1|1||||||00010101000000|")
    assert str(_ack_of(post(client, feed, broken)).segment("MSA")(1)) == "AE"
    assert str(_ack_of(post(client, feed, broken)).segment("MSA")(1)) == "AE"  # refused again, not remembered

    assert str(_ack_of(post(client, feed, fixture(EPIC))).segment("MSA")(1)) == "AA"
    assert len(appointments(feed.tenant)) == 1


def test_an_unexpected_failure_is_an_ae_that_does_not_ask_for_a_resend(client, feed, monkeypatch, caplog):

    def broken(**_kwargs):
        raise KeyError("QUINN")  # an error whose text holds PHI: it must not reach the log or the answer

    monkeypatch.setattr("sms.hl7.ingest.appointment_apply", broken)

    response = post(client, feed, fixture(EPIC))

    ack = _ack_of(response)
    assert str(ack.segment("MSA")(1)) == "AE"
    assert "sent unchanged it will fail again" in _err_text(ack)
    assert b"QUINN" not in response.content
    assert "QUINN" not in caplog.text and "KeyError" in caplog.text


def test_with_debug_on_a_failure_never_shows_the_message(client, feed, settings, monkeypatch):

    settings.DEBUG = True

    def broken(*_args, **_kwargs):
        raise RuntimeError("database set-up unreadable")

    monkeypatch.setattr("sms.hl7.views.ingest_message", broken)

    response = post(client, feed, fixture(EPIC))

    assert response.status_code == 503
    assert b"QUINN" not in response.content and b"Traceback" not in response.content


def test_over_mllp_a_batch_and_a_failure_get_the_same_answers_as_over_https(feed, monkeypatch):
    from sms.hl7.ingest import MLLP, TlsClientIdentity, ingest_message

    def over_mllp(body: bytes):
        return ingest_message(
            tenant=feed.tenant,
            environment="test",
            body=body,
            signature=None,
            via=MLLP,
            peer=TlsClientIdentity(feed.certificate.thumbprint_sha256),
        )

    batch = over_mllp(b"FHS|^~\\&|EPIC|NVH\rBHS|^~\\&|EPIC|NVH\r" + fixture(EPIC) + b"\rBTS|1\rFTS|1")
    assert batch.ack_code == "AR" and "batches (FHS/BHS) are not accepted" in batch.error

    monkeypatch.setattr("sms.hl7.ingest.appointment_apply", lambda **_: 1 / 0)
    failed = over_mllp(fixture(EPIC))
    assert failed.ack_code == "AE"
    assert "send it again" not in failed.error and "sent unchanged it will fail again" in failed.error
