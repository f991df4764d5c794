"""MLLP over TLS with client certificates: framing, one ACK per message, who may connect."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from datetime import UTC, datetime

import hl7
import pytest
import time_machine
from django.core.management import CommandError, call_command

from sms.hl7.mllp import (
    FrameReader,
    FramingError,
    MllpServer,
    certificate_for_peer,
    frame,
    server_ssl_context,
)
from sms.models import Appointment, ProcessedMessage
from sms.services.certificates import certificate_upload
from tenants.scoping import tenant_scope
from tests.support.hl7_feed import der, fixture, key_pem, make_certificate, make_key, pem, ready_endpoint

transactional = pytest.mark.django_db(transaction=True)  # the listener's threads must see committed rows

EPIC_DAY = datetime(2027, 1, 5, 14, 31, tzinfo=UTC)


# --- framing, without sockets ------------------------------------------------------------------


def test_frames_are_split_whatever_the_chunks():
    reader = FrameReader(1024)
    stream = frame(b"MSH|first") + b"\n" + frame(b"MSH|second")

    found = [
        item.payload
        for position in range(len(stream))
        for item in reader.feed(stream[position : position + 1])
    ]

    assert found == [b"MSH|first", b"MSH|second"]
    assert not reader.partial


def test_an_end_block_without_carriage_return_still_ends_the_frame():
    assert [f.payload for f in FrameReader(1024).feed(b"\x0bMSH|a\x1c\x0bMSH|b\x1c\r")] == [
        b"MSH|a",
        b"MSH|b",
    ]


def test_a_started_frame_is_partial():
    reader = FrameReader(1024)

    assert reader.feed(b"\x0bMSH|half") == []
    assert reader.partial


def test_an_oversized_frame_keeps_only_its_head_and_the_next_frame_is_read():
    reader = FrameReader(100)

    found = reader.feed(frame(b"MSH|" + b"x" * 10_000) + frame(b"MSH|small"))

    assert [f.oversize for f in found] == [True, False]
    assert found[0].payload.startswith(b"MSH|") and len(found[0].payload) <= 4096
    assert found[1].payload == b"MSH|small"


def test_data_outside_frames_ends_the_connection():
    with pytest.raises(FramingError):
        FrameReader(100).feed(b"GET / HTTP/1.1\r\n" + b"x" * 200)


def test_a_frame_that_never_ends_ends_the_connection():
    reader = FrameReader(100)
    reader.feed(b"\x0bMSH|")

    with pytest.raises(FramingError):
        for _ in range(20):
            reader.feed(b"x" * 100)


# --- TLS set-up -----------------------------------------------------------------------------------


class Pki:
    """A client CA, a server certificate and client certificates, made for one test and written to tmp_path."""

    def __init__(self, directory):
        self.directory = directory
        self.ca_key = make_key("p256")
        self.ca = make_certificate(self.ca_key, common_name="EHR client CA (test only)", ca=True)
        server_ca_key = make_key("p256")
        server_ca = make_certificate(server_ca_key, common_name="Connector CA (test only)", ca=True)
        server_key = make_key("p256")
        server = make_certificate(
            server_key,
            common_name="localhost",
            issuer=server_ca,
            issuer_key=server_ca_key,
            client=False,
            server_name="localhost",
        )
        self.server_cert = self.write("server.pem", pem(server))
        self.server_key = self.write("server.key", key_pem(server_key))
        self.client_ca = self.write("client-ca.pem", pem(self.ca))
        self.server_ca = self.write("server-ca.pem", pem(server_ca))

    def write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)

    def client(self, name: str, *, issuer=None, issuer_key=None, kind: str = "rsa2048"):
        """(certificate, files for the client's TLS context)."""
        key = make_key(kind)
        certificate = make_certificate(
            key, common_name=name, issuer=issuer or self.ca, issuer_key=issuer_key or self.ca_key
        )
        return certificate, (
            self.write(f"{name}.pem", pem(certificate)),
            self.write(f"{name}.key", key_pem(key)),
        )


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


@pytest.fixture
def listener(pki):
    """A running MllpServer on a free port; stopped (gracefully) after the test."""
    started = []

    def start(**options) -> MllpServer:
        context = server_ssl_context(
            certfile=pki.server_cert, keyfile=pki.server_key, client_ca=pki.client_ca
        )
        server = MllpServer(("127.0.0.1", 0), context, **options)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def connect(pki, server: MllpServer, files) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=pki.server_ca)
    context.load_cert_chain(*files)
    raw = socket.create_connection(server.server_address[:2], timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def read_acks(connection: ssl.SSLSocket, count: int) -> list[hl7.Message]:
    reader, acks = FrameReader(65536), []
    while len(acks) < count:
        data = connection.recv(65536)
        if not data:
            break
        acks += [hl7.parse(item.payload.decode()) for item in reader.feed(data)]
    return acks


def msa(ack: hl7.Message) -> tuple[str, str]:
    return str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))


def closed_without_answer(connection: ssl.SSLSocket) -> bool:
    try:
        return connection.recv(65536) == b""
    except (ssl.SSLError, ConnectionError):
        return True


@pytest.fixture
def epic_day():
    with time_machine.travel(EPIC_DAY, tick=True):
        yield


@pytest.fixture
def client_a(org_a, pki):
    """Org A's EHR: its client certificate is org A's uploaded signing certificate for test."""
    certificate, files = pki.client("org-a-ehr")
    certificate_upload(tenant=org_a, environment="test", data=pem(certificate), uploaded_by=None)
    ready_endpoint(org_a)
    return files


# --- over the wire -----------------------------------------------------------------------------------


@transactional
def test_one_message_gets_one_ack_and_is_stored_for_the_certificates_organization(
    pki, listener, client_a, org_a, org_b, epic_day
):
    server = listener()
    with connect(pki, server, client_a) as connection:
        connection.sendall(frame(fixture("epic_siu_s12_v251.hl7")))
        [ack] = read_acks(connection, 1)

    assert msa(ack) == ("AA", "EPC0000100001")
    with tenant_scope(org_a):
        assert Appointment.objects.get().external_id == "4000123456"
    with tenant_scope(org_b):
        assert not Appointment.objects.exists()


@transactional
def test_two_messages_in_one_connection_get_two_acks_in_order(pki, listener, client_a, org_a, epic_day):
    server = listener()
    with connect(pki, server, client_a) as connection:
        connection.sendall(frame(fixture("epic_siu_s12_v251.hl7")) + frame(fixture("cerner_siu_s12_v23.hl7")))
        acks = read_acks(connection, 2)
        # The connection stays open for more.
        connection.sendall(frame(fixture("adt_a04_v251.hl7")))
        acks += read_acks(connection, 1)

    assert [msa(ack) for ack in acks] == [
        ("AA", "EPC0000100001"),
        ("AA", "CRN20270111154500123"),
        ("AR", "EPC0000900001"),
    ]
    with tenant_scope(org_a):
        assert Appointment.objects.count() == 2


@transactional
def test_a_resent_message_is_acknowledged_again_and_not_processed_twice(
    pki, listener, client_a, org_a, epic_day
):
    server = listener()
    body = fixture("epic_siu_s12_v251.hl7")
    with connect(pki, server, client_a) as connection:
        connection.sendall(frame(body) + frame(body))
        acks = read_acks(connection, 2)

    assert [msa(ack) for ack in acks] == [("AA", "EPC0000100001")] * 2
    with tenant_scope(org_a):
        assert ProcessedMessage.objects.count() == 1


@transactional
def test_a_client_certificate_that_is_no_uploaded_certificate_is_refused(pki, listener, client_a, org_a):
    server = listener()
    _, stranger = pki.client("someone-else")  # same CA, but never uploaded

    with connect(pki, server, stranger) as connection:
        connection.sendall(frame(fixture("epic_siu_s12_v251.hl7")))
        assert closed_without_answer(connection)

    with tenant_scope(org_a):
        assert not Appointment.objects.exists()
        assert not ProcessedMessage.objects.exists()


@transactional
def test_a_client_certificate_from_another_ca_fails_the_handshake(pki, listener, org_a):
    server = listener()
    rogue_ca_key = make_key("p256")
    rogue_ca = make_certificate(rogue_ca_key, common_name="Rogue CA", ca=True)
    certificate, files = pki.client("rogue", issuer=rogue_ca, issuer_key=rogue_ca_key)
    # Even uploaded as org A's certificate, it must chain to --client-ca.
    certificate_upload(tenant=org_a, environment="test", data=pem(certificate), uploaded_by=None)
    ready_endpoint(org_a)

    with pytest.raises((ssl.SSLError, ConnectionError)), connect(pki, server, files) as connection:
        connection.sendall(frame(fixture("epic_siu_s12_v251.hl7")))
        if connection.recv(65536) == b"":
            raise ConnectionError("closed")

    with tenant_scope(org_a):
        assert not Appointment.objects.exists()


@transactional
def test_organization_bs_certificate_only_ever_writes_to_organization_b(
    pki, listener, client_a, org_a, org_b, epic_day
):
    certificate_b, files_b = pki.client("org-b-ehr")
    certificate_upload(tenant=org_b, environment="test", data=pem(certificate_b), uploaded_by=None)
    ready_endpoint(org_b)
    server = listener()

    with connect(pki, server, files_b) as connection:
        connection.sendall(frame(fixture("epic_siu_s12_v251.hl7")))
        [ack] = read_acks(connection, 1)

    assert msa(ack)[0] == "AA"
    with tenant_scope(org_a):
        assert not Appointment.objects.exists()
    with tenant_scope(org_b):
        assert Appointment.objects.count() == 1


@transactional
def test_a_listener_pinned_to_production_refuses_a_test_certificate(pki, listener, client_a):
    server = listener(environment="production")

    with connect(pki, server, client_a) as connection:
        connection.sendall(frame(fixture("epic_siu_s12_v251.hl7")))
        assert closed_without_answer(connection)


@transactional
def test_replacing_the_certificate_cuts_off_an_open_connection(pki, listener, client_a, org_a, epic_day):
    server = listener()
    with connect(pki, server, client_a) as connection:
        connection.sendall(frame(fixture("epic_siu_s12_v251.hl7")))
        assert msa(read_acks(connection, 1)[0])[0] == "AA"
        replacement, _ = pki.client("org-a-ehr-2027")
        certificate_upload(tenant=org_a, environment="test", data=pem(replacement), uploaded_by=None)

        connection.sendall(frame(fixture("cerner_siu_s12_v23.hl7")))
        assert closed_without_answer(connection)

    with tenant_scope(org_a):
        assert Appointment.objects.count() == 1


@transactional
def test_an_oversized_message_is_rejected_and_the_connection_goes_on(pki, listener, client_a, epic_day):
    server = listener(max_bytes=2048)
    big = fixture("epic_siu_s12_v251.hl7") + b"\rNTE|2||" + b"x" * 5000

    with connect(pki, server, client_a) as connection:
        connection.sendall(frame(big) + frame(fixture("epic_siu_s12_v251.hl7")))
        acks = read_acks(connection, 2)

    assert msa(acks[0]) == ("AR", "EPC0000100001")
    assert "larger than 2048 bytes" in str(acks[0].segment("ERR")(8))
    assert msa(acks[1]) == ("AA", "EPC0000100001")


@transactional
def test_a_frame_that_is_not_hl7_gets_a_reject(pki, listener, client_a):
    server = listener()

    with connect(pki, server, client_a) as connection:
        connection.sendall(frame(b"hello"))
        [ack] = read_acks(connection, 1)

    assert msa(ack) == ("AR", "")


@transactional
def test_stopping_the_listener_closes_idle_connections_promptly(pki, listener, client_a):
    server = listener()
    connection = connect(pki, server, client_a)
    connection.sendall(frame(b"hello"))
    read_acks(connection, 1)

    started = time.monotonic()
    server.stop()

    assert time.monotonic() - started < 3
    assert closed_without_answer(connection)
    connection.close()


# --- which organization a certificate belongs to ----------------------------------------------------


def test_a_certificate_active_for_two_organizations_is_ambiguous_unless_pinned(org_a, org_b, pki):
    shared, _ = pki.client("shared")
    for tenant in (org_a, org_b):
        certificate_upload(tenant=tenant, environment="test", data=pem(shared), uploaded_by=None)

    assert certificate_for_peer(der(shared)) is None
    pinned = certificate_for_peer(der(shared), tenant_id=org_b.microsoft_tenant_id)
    assert pinned is not None and pinned.tenant == org_b


def test_no_certificate_matches_nothing(org_a):
    assert certificate_for_peer(None) is None
    assert certificate_for_peer(b"not a certificate") is None


# --- the command ----------------------------------------------------------------------------------------


def test_the_command_explains_a_broken_tls_set_up(tmp_path):
    with pytest.raises(CommandError) as failed:
        call_command(
            "mllp_server",
            "--certfile",
            str(tmp_path / "missing.pem"),
            "--client-ca",
            str(tmp_path / "missing-ca.pem"),
            "--port",
            "0",
        )

    assert "TLS set-up failed" in str(failed.value)
