"""The guarded EHR HTTP client, against real local HTTP(S) servers.

The servers are `tests.support.local_server.LocalServer`: threaded stdlib
servers on 127.0.0.1 with a random port, serving configurable routes (status,
headers, body, delays, trickling bytes, huge or chunked bodies, redirects).
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connector import ehr_http
from connector.ehr_http import (
    EhrHttpError,
    ehr_get_json,
    ehr_post_form,
    ehr_request_json,
    is_forbidden_address,
)
from tests.support.local_server import LocalServer

# --- A real local server (tests/support/local_server.py) ---------------------------------------


@pytest.fixture
def serve(local_server_factory) -> Callable[..., LocalServer]:
    """serve(tls=None) -> a started LocalServer, stopped after the test."""
    return local_server_factory


@pytest.fixture
def server(serve) -> LocalServer:
    return serve()


@pytest.fixture
def local_allowed(settings):
    """The test servers live on a loopback address: allow it, as EHR_INSECURE_HOSTS does in the demo."""
    settings.EHR_INSECURE_HOSTS = ["127.0.0.1"]


class FakeDns(dict):
    """Answers for made-up host names in the connector's own lookups; records every name asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []


@pytest.fixture
def fake_dns(monkeypatch) -> FakeDns:
    dns = FakeDns()
    real = ehr_http._system_getaddrinfo

    def getaddrinfo(host: str, port: int, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):
        dns.asked.append(host)
        if host not in dns:
            return real(host, port, family, type, proto, flags)
        answer = dns[host]
        if isinstance(answer, Exception):
            raise answer
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answer
        ]

    monkeypatch.setattr(ehr_http, "_system_getaddrinfo", getaddrinfo)
    return dns


def failure(call: Callable[[], Any]) -> EhrHttpError:
    with pytest.raises(EhrHttpError) as caught:
        call()
    return caught.value


# --- Certificates ------------------------------------------------------------------------------


@dataclass
class Certs:
    ca_file: Path
    fhir_test_chain: tuple[Path, Path]  # cert, key for "fhir.test", issued by the test CA
    self_signed_loopback: tuple[Path, Path]  # cert, key for 127.0.0.1, signed by itself


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
    san: x509.GeneralName | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write_pair(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert("Connector Test CA", ca_key, ca=True)
    ca_file, _ = _write_pair(directory, "ca", ca_cert, ca_key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("fhir.test", leaf_key, issuer=(ca_cert, ca_key), san=x509.DNSName("fhir.test"))
    loop_key = ec.generate_private_key(ec.SECP256R1())
    loop = _cert("127.0.0.1", loop_key, san=x509.IPAddress(ip_address("127.0.0.1")))
    return Certs(
        ca_file=ca_file,
        fhir_test_chain=_write_pair(directory, "fhir-test", leaf, leaf_key),
        self_signed_loopback=_write_pair(directory, "loopback", loop, loop_key),
    )


def tls_context(pair: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile=str(pair[0]), keyfile=str(pair[1]))
    return context


# --- Success -----------------------------------------------------------------------------------


def test_it_gets_json_from_an_allowed_server(server, local_allowed):
    server.add("/fhir/metadata", body={"resourceType": "CapabilityStatement"})

    response = ehr_get_json(server.url("/fhir/metadata"))

    assert response.status == 200
    assert response.json == {"resourceType": "CapabilityStatement"}
    assert response.url == server.url("/fhir/metadata")
    assert response.headers["content-type"] == "application/json"
    seen = server.seen[0]
    assert seen.headers["user-agent"] == "open-ehr-connector/0.1"
    assert seen.headers["accept"] == "application/fhir+json, application/json"
    assert seen.headers["host"] == f"127.0.0.1:{server.port}"


def test_it_posts_a_form_and_can_hand_back_an_oauth_error_body(server, local_allowed):
    server.add("/token", status=400, body={"error": "invalid_grant"})

    response = ehr_post_form(
        server.url("/token"), {"grant_type": "authorization_code", "code": "abc"}, raise_for_status=False
    )

    assert response.status == 400
    assert response.json == {"error": "invalid_grant"}
    assert server.seen[0].method == "POST"
    assert server.seen[0].body == b"grant_type=authorization_code&code=abc"
    assert server.seen[0].headers["content-type"] == "application/x-www-form-urlencoded"


def test_an_error_status_without_json_still_comes_back_when_asked_for(server, local_allowed):
    server.add("/token", status=502, body="<html>Bad gateway</html>", content_type="text/html")

    response = ehr_post_form(server.url("/token"), {"a": "b"}, raise_for_status=False)

    assert (response.status, response.json) == (502, {})


def test_it_sends_a_fhir_json_body_with_any_method(server, local_allowed):
    server.add("/fhir/Encounter/1", status=200, body={"resourceType": "Encounter", "id": "1"})

    response = ehr_request_json(
        "PUT", server.url("/fhir/Encounter/1"), json_body={"resourceType": "Encounter", "id": "1"}
    )

    assert response.json["id"] == "1"
    assert server.seen[0].method == "PUT"
    assert server.seen[0].headers["content-type"] == "application/fhir+json"
    assert json.loads(server.seen[0].body) == {"resourceType": "Encounter", "id": "1"}


def test_an_empty_answer_to_a_write_is_an_empty_document(server, local_allowed):
    server.add("/fhir/Encounter/1", status=204)

    assert ehr_request_json("PUT", server.url("/fhir/Encounter/1"), json_body={}).json == {}


def test_it_follows_redirects_and_reports_the_final_url(server, local_allowed):
    server.add("/old", status=301, location="/middle")
    server.add("/middle", status=307, location=server.url("/fhir/metadata"))
    server.add("/fhir/metadata", body={"resourceType": "CapabilityStatement"})

    response = ehr_get_json(server.url("/old"))

    assert response.url == server.url("/fhir/metadata")
    assert [s.path for s in server.seen] == ["/old", "/middle", "/fhir/metadata"]


def test_a_303_after_a_post_is_followed_with_a_get(server, local_allowed):
    server.add("/token", status=303, location="/done")
    server.add("/done", body={"ok": True})

    ehr_post_form(server.url("/token"), {"secret": "x"})

    assert [(s.method, s.body) for s in server.seen] == [("POST", b"secret=x"), ("GET", b"")]


def test_credentials_are_not_sent_to_another_origin_on_redirect(serve, local_allowed):
    first, second = serve(), serve()
    first.add("/fhir/Patient", status=302, location=second.url("/elsewhere"))
    second.add("/elsewhere", body={})

    ehr_get_json(first.url("/fhir/Patient"), headers={"Authorization": "Bearer token-for-first"})

    assert first.seen[0].headers["authorization"] == "Bearer token-for-first"
    assert "authorization" not in second.seen[0].headers


# --- Addresses ---------------------------------------------------------------------------------


def test_plain_http_is_refused_for_hosts_not_allowed():
    error = failure(lambda: ehr_get_json("http://fhir.example.org/api/FHIR/R4/metadata"))

    assert error.code == "insecure_scheme"
    assert error.permanent
    assert "https://" in error.message


def test_plain_http_to_an_allowed_host_is_refused_without_the_allowlist(server):
    error = failure(lambda: ehr_get_json(server.url("/metadata")))

    assert error.code == "insecure_scheme"
    assert server.seen == []


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/fhir",
        "https://10.0.0.5/fhir",
        "https://192.168.1.20/fhir",
        "https://172.16.0.1/fhir",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.100.100.200/latest/meta-data/",
        "https://168.63.129.16/machine",
        "https://[::1]/fhir",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/fhir",
        "https://[fe80::1]/fhir",
        "https://0.0.0.0/fhir",
        "https://224.0.0.1/fhir",
        "https://localhost/fhir",
        "https://2130706433/fhir",  # 127.0.0.1 written as one number
        "https://0x7f.1/fhir",  # 127.0.0.1 written in hex
    ],
)
def test_internal_addresses_are_refused(url):
    error = failure(lambda: ehr_get_json(url))

    assert error.code == "forbidden_address"
    assert error.permanent
    assert "public internet" in error.message


def test_a_name_with_any_internal_address_is_refused(fake_dns):
    fake_dns["fhir.example.org"] = ["93.184.216.34", "10.0.0.5"]

    error = failure(lambda: ehr_get_json("https://fhir.example.org/api/FHIR/R4/metadata"))

    assert error.code == "forbidden_address"
    assert error.message.startswith("fhir.example.org points to a private")


def test_a_name_that_does_not_resolve_is_a_dns_failure(fake_dns):
    fake_dns["fhir.exmaple.org"] = socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    error = failure(lambda: ehr_get_json("https://fhir.exmaple.org/api/FHIR/R4/metadata"))

    assert error.code == "dns_failure"
    assert error.permanent
    assert "fhir.exmaple.org could not be found in DNS" in error.message


def test_a_temporary_dns_failure_can_be_retried(fake_dns):
    fake_dns["fhir.example.org"] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure")

    error = failure(lambda: ehr_get_json("https://fhir.example.org/metadata"))

    assert (error.code, error.permanent) == ("dns_failure", False)


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("93.184.216.34", False),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("100.64.0.1", True),  # carrier-grade NAT
        ("192.0.0.192", True),  # Oracle Cloud metadata
        ("64:ff9b::7f00:1", True),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("fc00::1", True),
        ("ff02::1", True),
        ("::", True),
        ("not an address", True),
    ],
)
def test_forbidden_addresses(address, forbidden):
    assert is_forbidden_address(address) is forbidden


def test_it_connects_to_the_address_it_checked_without_asking_dns_again(
    serve, fake_dns, settings, monkeypatch
):
    settings.EHR_INSECURE_HOSTS = ["fhir.test"]
    fake_dns["fhir.test"] = ["127.0.0.1"]
    asked_elsewhere: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def spy(host, *args, **kwargs):
        asked_elsewhere.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    server = serve()
    server.add("/fhir/metadata", body={"resourceType": "CapabilityStatement"})

    response = ehr_get_json(f"http://fhir.test:{server.port}/fhir/metadata")

    assert response.url == f"http://fhir.test:{server.port}/fhir/metadata"
    assert server.seen[0].headers["host"] == f"fhir.test:{server.port}"
    assert fake_dns.asked == ["fhir.test"]
    assert "fhir.test" not in asked_elsewhere


def test_credentials_in_the_url_are_refused():
    error = failure(lambda: ehr_get_json("https://user:pass@fhir.example.org/metadata"))

    assert error.code == "invalid_url"


# --- Redirects ---------------------------------------------------------------------------------


def test_a_redirect_to_plain_http_is_refused(server, local_allowed):
    server.add("/fhir/metadata", status=302, location="http://fhir.example.org/fhir/metadata")

    error = failure(lambda: ehr_get_json(server.url("/fhir/metadata")))

    assert error.code == "redirect_to_http"
    assert error.permanent
    assert "fhir.example.org" in error.message


def test_every_redirect_hop_is_checked_again(server, local_allowed):
    server.add("/fhir/metadata", status=302, location="https://169.254.169.254/latest/meta-data/")

    error = failure(lambda: ehr_get_json(server.url("/fhir/metadata")))

    assert error.code == "forbidden_address"


def test_too_many_redirects_are_refused(server, local_allowed):
    server.add("/loop", status=302, location="/loop")

    error = failure(lambda: ehr_get_json(server.url("/loop")))

    assert error.code == "too_many_redirects"
    assert len(server.seen) == 6  # the first request and five redirects


# --- Size and time -----------------------------------------------------------------------------


def test_a_body_over_the_cap_is_refused_by_its_content_length(server, local_allowed, settings):
    settings.EHR_HTTP_MAX_RESPONSE_BYTES = 1000
    server.add("/big", body=b"x" * 5000, content_type="application/json")

    error = failure(lambda: ehr_get_json(server.url("/big")))

    assert error.code == "too_large"
    assert "more than 1000 bytes" in error.message


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_cap_is_cut_off_while_streaming(server, local_allowed, settings, chunked):
    settings.EHR_HTTP_MAX_RESPONSE_BYTES = 64 * 1024
    # 100 MB announced by nothing: the client must stop counting at the cap, not read it all.
    server.add("/huge", body=b"x" * 65536, repeat=1600, content_length=False, chunked=chunked)

    started = time.monotonic()
    error = failure(lambda: ehr_get_json(server.url("/huge")))

    assert error.code == "too_large"
    assert time.monotonic() - started < 3


def test_a_compressed_body_is_counted_after_decompression(server, local_allowed, settings):
    settings.EHR_HTTP_MAX_RESPONSE_BYTES = 10_000
    bomb = gzip.compress(b"0" * 2_000_000)
    server.add("/bomb", body=bomb, headers={"Content-Encoding": "gzip"}, content_type="application/json")

    error = failure(lambda: ehr_get_json(server.url("/bomb")))

    assert error.code == "too_large"


def test_a_trickling_body_hits_the_total_timeout(server, local_allowed, settings):
    settings.EHR_HTTP_TOTAL_TIMEOUT = 1
    server.add("/slow", body=b'{"resourceType": "CapabilityStatement"}' * 10, trickle=0.05)

    started = time.monotonic()
    error = failure(lambda: ehr_get_json(server.url("/slow")))

    assert error.code == "timeout"
    assert not error.permanent
    assert "within 1 second" in error.message
    assert time.monotonic() - started < 2


def test_a_trickling_body_without_length_is_not_taken_for_a_short_one(server, local_allowed, settings):
    settings.EHR_HTTP_TOTAL_TIMEOUT = 0.5
    server.add("/slow", body=b"{}" + b" " * 400, trickle=0.01, content_length=False)

    error = failure(lambda: ehr_get_json(server.url("/slow")))

    assert error.code == "timeout"


def test_trickling_headers_hit_the_total_timeout(server, local_allowed, settings):
    settings.EHR_HTTP_TOTAL_TIMEOUT = 0.5
    server.add("/slow", body={}, trickle_headers=0.05)

    started = time.monotonic()
    error = failure(lambda: ehr_get_json(server.url("/slow")))

    assert error.code == "timeout"
    assert time.monotonic() - started < 2


def test_a_server_slow_to_answer_hits_the_total_timeout(server, local_allowed, settings):
    settings.EHR_HTTP_TOTAL_TIMEOUT = 0.5
    server.add("/slow", body={}, delay=3)

    started = time.monotonic()
    error = failure(lambda: ehr_get_json(server.url("/slow")))

    assert error.code == "timeout"
    assert time.monotonic() - started < 2


def test_a_server_that_does_not_accept_hits_the_connect_timeout(local_allowed, settings):
    settings.EHR_HTTP_CONNECT_TIMEOUT = 0.3
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    # Fill the accept queue: further connection attempts get no answer at all.
    held: list[socket.socket] = []
    for _ in range(10):
        client = socket.socket()
        client.settimeout(0.2)
        held.append(client)
        try:
            client.connect(("127.0.0.1", port))
        except TimeoutError:
            break
    try:
        started = time.monotonic()
        error = failure(lambda: ehr_get_json(f"http://127.0.0.1:{port}/metadata"))
        elapsed = time.monotonic() - started
    finally:
        for client in held:
            client.close()
        listener.close()

    assert error.code == "timeout"
    assert "did not accept a connection within 0.3 seconds" in error.message
    assert elapsed < 1.5


def test_a_closed_port_is_unreachable(local_allowed):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    error = failure(lambda: ehr_get_json(f"http://127.0.0.1:{port}/metadata"))

    assert error.code == "unreachable"
    assert not error.permanent
    # A loopback address is this machine: "from the internet" would send people looking in the wrong place.
    assert error.message == (
        "The server at 127.0.0.1 could not be reached: check the URL and that a server is listening there "
        "on this machine (is it running, on that port?)."
    )


def test_an_unreachable_public_server_must_be_reachable_from_the_internet():
    from connector.ehr_http import _reachable_from_here

    assert _reachable_from_here("fhir.example.org") == "it is reachable from the internet"
    assert _reachable_from_here("localhost").startswith("a server is listening there")


# --- What comes back ---------------------------------------------------------------------------


def test_html_is_not_json(server, local_allowed):
    server.add("/fhir/metadata", body="<html>Sign in</html>", content_type="text/html; charset=utf-8")

    error = failure(lambda: ehr_get_json(server.url("/fhir/metadata")))

    assert error.code == "not_json"
    assert "answered with text/html, not a JSON document" in error.message


def test_a_json_array_is_not_a_document(server, local_allowed):
    server.add("/fhir/metadata", body=[1, 2, 3])

    assert failure(lambda: ehr_get_json(server.url("/fhir/metadata"))).code == "not_json"


def test_an_empty_get_answer_is_not_json(server, local_allowed):
    server.add("/fhir/metadata", status=200, content_type="application/json")

    error = failure(lambda: ehr_get_json(server.url("/fhir/metadata")))

    assert error.code == "not_json"
    assert "an empty body" in error.message


@pytest.mark.parametrize(("status", "permanent"), [(404, True), (401, True), (429, False), (503, False)])
def test_an_error_status_is_a_bad_status(server, local_allowed, status, permanent):
    server.add("/fhir/metadata", status=status, body={"issue": []})

    error = failure(lambda: ehr_get_json(server.url("/fhir/metadata")))

    assert (error.code, error.status, error.permanent) == ("bad_status", status, permanent)
    assert f"HTTP {status}" in error.message


def test_nothing_secret_is_logged(server, fake_dns, settings, caplog):
    # A host name, not 127.0.0.1: the log redaction filter takes dotted numbers for phone numbers.
    settings.EHR_INSECURE_HOSTS = ["fhir.test"]
    fake_dns["fhir.test"] = ["127.0.0.1"]
    server.add("/token", body={"access_token": "tok-from-the-server"})
    caplog.set_level("DEBUG", logger="connector.ehr_http")

    ehr_post_form(
        f"http://fhir.test:{server.port}/token?state=query-secret",
        {"code": "form-secret"},
        headers={"Authorization": "Basic header-secret"},
    )

    assert "fhir.test" in caplog.text
    for secret in ("tok-from-the-server", "query-secret", "form-secret", "header-secret", "/token"):
        assert secret not in caplog.text


# --- TLS ---------------------------------------------------------------------------------------


def test_a_self_signed_certificate_is_not_trusted(serve, certs, local_allowed):
    # The allowlist lets the connector reach a loopback address; it never turns verification off.
    server = serve(tls=tls_context(certs.self_signed_loopback))
    server.add("/fhir/metadata", body={})

    error = failure(lambda: ehr_get_json(server.url("/fhir/metadata")))

    assert error.code == "tls_untrusted"
    assert error.permanent
    assert error.message.startswith("The TLS certificate of 127.0.0.1 is not trusted")
    assert "public certificate authority" in error.message
    assert server.seen == []


def test_tls_is_verified_for_the_host_name_while_connecting_to_the_checked_address(
    serve, certs, fake_dns, settings, monkeypatch
):
    monkeypatch.setattr(ehr_http, "_ca_bundle", lambda: str(certs.ca_file))
    settings.EHR_INSECURE_HOSTS = ["fhir.test"]  # for its loopback address; https is still used
    fake_dns["fhir.test"] = ["127.0.0.1"]
    server = serve(tls=tls_context(certs.fhir_test_chain))
    server.add("/fhir/metadata", body={"resourceType": "CapabilityStatement"})

    response = ehr_get_json(f"https://fhir.test:{server.port}/fhir/metadata")

    assert response.json == {"resourceType": "CapabilityStatement"}
    assert server.sni == ["fhir.test"]
    assert server.seen[0].headers["host"] == f"fhir.test:{server.port}"


def test_a_certificate_for_another_name_is_not_trusted(serve, certs, fake_dns, settings, monkeypatch):
    monkeypatch.setattr(ehr_http, "_ca_bundle", lambda: str(certs.ca_file))
    settings.EHR_INSECURE_HOSTS = ["other.test"]
    fake_dns["other.test"] = ["127.0.0.1"]
    server = serve(tls=tls_context(certs.fhir_test_chain))

    error = failure(lambda: ehr_get_json(f"https://other.test:{server.port}/fhir/metadata"))

    assert error.code == "tls_untrusted"
    assert server.seen == []


def test_https_to_a_plain_http_server_is_a_tls_failure(server, local_allowed):
    error = failure(lambda: ehr_get_json(f"https://127.0.0.1:{server.port}/fhir/metadata"))

    assert error.code == "tls_failed"
