"""The one HTTP client for every outbound call to an EHR server.

FHIR base URLs are typed in by hospital administrators, and the OAuth endpoints
come from the EHR's own SMART configuration, so every URL is untrusted input:
this module is the guard against server-side request forgery (SSRF) and against
slow or huge answers. Nothing else in the project should call `requests`
against an EHR directly.

Each call:

- accepts only https URLs, unless the host is listed in `EHR_INSECURE_HOSTS`
  (the demo and the tests);
- resolves the host itself and refuses if any address is private, loopback,
  link-local, multicast, reserved, unspecified or a cloud metadata address,
  unless the host is listed in `EHR_INSECURE_HOSTS`;
- connects to the very address it checked (no second DNS lookup that a
  rebinding name could answer differently), while TLS still verifies the
  certificate against the host name, sent as SNI;
- follows at most five redirects by hand, checking every hop again and
  refusing a step down to plain http;
- keeps the whole exchange, body included, within `EHR_HTTP_TOTAL_TIMEOUT` and
  the body within `EHR_HTTP_MAX_RESPONSE_BYTES`.

Failures raise `EhrHttpError`, whose message a hospital administrator can act on.
Logs name the host and the status only: never bodies, tokens or query strings.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import SplitResult, urlencode, urljoin, urlsplit

import certifi
import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

logger = logging.getLogger(__name__)

USER_AGENT = "open-ehr-connector/0.1"
FHIR_JSON_ACCEPT = "application/fhir+json, application/json"
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Retrying a 4xx does not help, except for these.
TEMPORARY_CLIENT_STATUSES = frozenset({408, 425, 429})
# At most this many of a host's addresses are tried when connecting fails.
MAX_ADDRESSES_TRIED = 4

# Cloud metadata services. Most are already non-global (link-local, shared or
# unique-local space), but Azure's WireServer sits on a public address, so the
# list is checked explicitly.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, Azure, Google Cloud, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "192.0.0.192",  # Oracle Cloud
    )
)
# NAT64 gateways route these to the IPv4 address in the last 32 bits.
_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


class EhrHttpError(Exception):
    """A call to an EHR server failed.

    `code` is a short machine string, `message` a sentence a hospital
    administrator can act on, `permanent` says whether retrying could help and
    `status` is the HTTP status when the server answered.
    """

    def __init__(self, code: str, message: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.permanent = permanent
        self.status = status

    def __repr__(self) -> str:
        return f"EhrHttpError(code={self.code!r}, status={self.status!r}, permanent={self.permanent!r})"


@dataclass(frozen=True)
class EhrResponse:
    status: int
    # Kept out of repr: token responses carry secrets.
    json: dict[str, Any] = field(repr=False)
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


def ehr_get_json(
    url: str,
    *,
    accept: str = FHIR_JSON_ACCEPT,
    headers: Mapping[str, str] | None = None,
    raise_for_status: bool = True,
) -> EhrResponse:
    """GET a JSON document from an EHR server."""
    return ehr_request("GET", url, accept=accept, headers=headers, raise_for_status=raise_for_status)


def ehr_post_form(
    url: str,
    data: Mapping[str, str],
    *,
    headers: Mapping[str, str] | None = None,
    accept: str = "application/json",
    raise_for_status: bool = True,
) -> EhrResponse:
    """POST a form (application/x-www-form-urlencoded) and read a JSON answer.

    OAuth token endpoints answer errors with HTTP 400 and a JSON body the caller
    must show: pass `raise_for_status=False` and look at `status`.
    """
    return ehr_request(
        "POST", url, form=dict(data), accept=accept, headers=headers, raise_for_status=raise_for_status
    )


def ehr_request_json(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    accept: str = FHIR_JSON_ACCEPT,
    raise_for_status: bool = True,
) -> EhrResponse:
    """Send a JSON (FHIR) body with any method, e.g. PUT or POST a resource."""
    return ehr_request(
        method, url, json_body=json_body, accept=accept, headers=headers, raise_for_status=raise_for_status
    )


def ehr_request(
    method: str,
    url: str,
    *,
    form: Mapping[str, str] | None = None,
    json_body: Any = None,
    accept: str = FHIR_JSON_ACCEPT,
    headers: Mapping[str, str] | None = None,
    raise_for_status: bool = True,
) -> EhrResponse:
    """Send one request to an EHR server through every guard rail and parse the JSON answer.

    A non-2xx status raises `EhrHttpError("bad_status")` unless
    `raise_for_status=False`; then the response is returned with its parsed
    JSON body, or `{}` when that body is not JSON. A 2xx body that is not a
    JSON object always raises `not_json` (an empty body is `{}`, except for GET).
    """
    method = method.upper()
    body: bytes | None = None
    request_headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(
        {"User-Agent": USER_AGENT, "Accept": accept}
    )
    if form is not None:
        body = urlencode(list(form.items())).encode()
        request_headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif json_body is not None:
        body = json.dumps(json_body, separators=(",", ":")).encode()
        request_headers["Content-Type"] = "application/fhir+json"
    request_headers.update(headers or {})

    deadline = _Deadline(float(settings.EHR_HTTP_TOTAL_TIMEOUT))
    started = time.monotonic()
    host = _host_for_messages(url)
    try:
        response = _exchange(method, url, request_headers, body, deadline, raise_for_status)
    except EhrHttpError as error:
        logger.warning("EHR %s %s failed: %s (status %s)", method, host, error.code, error.status)
        raise
    logger.info(
        "EHR %s %s answered %s in %d ms",
        method,
        _host_for_messages(response.url),
        response.status,
        (time.monotonic() - started) * 1000,
    )
    return response


def is_insecure_host(host: str) -> bool:
    """True if `host` is listed in EHR_INSECURE_HOSTS (plain http and internal addresses allowed)."""
    allowed = {str(h).strip().lower().strip("[]") for h in settings.EHR_INSECURE_HOSTS if str(h).strip()}
    return host.lower().strip("[]") in allowed


def is_forbidden_address(address: str) -> bool:
    """True for any address an EHR on the public internet cannot have."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    return _is_forbidden_ip(ip)


# --- Internals ------------------------------------------------------------------------------


def _is_forbidden_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address are judged by that address too.
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour:
            embedded.append(ip.sixtofour)
        if ip.teredo:
            embedded.extend(ip.teredo)
        if ip in _NAT64_PREFIX:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(_is_forbidden_ip(v4) for v4 in embedded):
            return True
        if ip.is_site_local:
            return True
    return (
        ip in METADATA_ADDRESSES
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        # Catches the special-purpose ranges the flags above leave out, such as
        # the carrier-grade NAT space 100.64.0.0/10.
        or not ip.is_global
    )


@dataclass(frozen=True)
class _Target:
    """A checked URL: where to connect, and what to call the server."""

    url: str
    parts: SplitResult
    host: str  # as sent in SNI and checked in the certificate (IDNA-encoded, no brackets)
    port: int
    insecure_allowed: bool

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.parts.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.parts.scheme == "https" else 80
        return name if self.port == default_port else f"{name}:{self.port}"

    def pinned_url(self, address: str) -> str:
        literal = f"[{address}]" if ":" in address else address
        path = self.parts.path or "/"
        query = f"?{self.parts.query}" if self.parts.query else ""
        return f"{self.parts.scheme}://{literal}:{self.port}{path}{query}"


def _parse_target(url: str) -> _Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise _invalid_url() from None
    raw_host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not raw_host:
        raise _invalid_url()
    if parts.username is not None or parts.password is not None:
        raise EhrHttpError(
            "invalid_url",
            "Enter the address without a user name or password: the connector signs in with SMART on FHIR.",
            permanent=True,
        )
    try:
        host = raw_host if _is_ip_literal(raw_host) else raw_host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _invalid_url() from None
    host = host.rstrip(".").lower()
    insecure_allowed = is_insecure_host(host)
    if parts.scheme != "https" and not insecure_allowed:
        raise EhrHttpError(
            "insecure_scheme",
            f"Use an https:// address: {host} would be called over plain http, "
            "and EHRs only serve FHIR over TLS.",
            permanent=True,
        )
    return _Target(
        url=url.strip(),
        parts=parts,
        host=host,
        port=port or (443 if parts.scheme == "https" else 80),
        insecure_allowed=insecure_allowed,
    )


def _invalid_url() -> EhrHttpError:
    return EhrHttpError(
        "invalid_url",
        "That is not a valid web address: enter a full address such as https://fhir.example.org/api/FHIR/R4.",
        permanent=True,
    )


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _host_for_messages(url: str) -> str:
    try:
        return urlsplit(url).hostname or "the server"
    except ValueError:
        return "the server"


# Looked up through this name so tests can answer for made-up host names.
_system_getaddrinfo = socket.getaddrinfo
# getaddrinfo cannot be interrupted; running it here keeps DNS inside the deadline.
_dns_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ehr-dns")


def _resolve(target: _Target, deadline: _Deadline) -> list[str]:
    """The host's addresses, refused if any of them is internal."""
    if _is_ip_literal(target.host):
        addresses = [target.host.split("%", 1)[0]]
    else:
        future = _dns_executor.submit(_system_getaddrinfo, target.host, target.port, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=max(deadline.remaining(), 0.001))
        except FutureTimeoutError:
            raise _timeout_error(target.host, deadline) from None
        except socket.gaierror as exc:
            not_found = exc.errno in {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
            raise EhrHttpError(
                "dns_failure",
                f"The name {target.host} could not be found in DNS: check the spelling of the URL."
                if not_found
                else f"The name {target.host} could not be looked up in DNS right now: try again later.",
                permanent=not_found,
            ) from None
        except (UnicodeError, OSError):
            raise _invalid_url() from None
        addresses = []
        for info in infos:
            if info[0] not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = str(info[4][0]).split("%", 1)[0]
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise EhrHttpError(
                "dns_failure",
                f"The name {target.host} has no internet address in DNS: check the spelling of the URL.",
                permanent=True,
            )
    # Every address is checked, not only the one used: a name that mixes a
    # public and an internal address is refused outright.
    if not target.insecure_allowed and any(is_forbidden_address(a) for a in addresses):
        raise EhrHttpError(
            "forbidden_address",
            f"{target.host} points to a private, loopback or otherwise internal network address: "
            "the connector only calls EHR servers on the public internet. "
            "Use the public FHIR address of your EHR.",
            permanent=True,
        )
    return addresses[:MAX_ADDRESSES_TRIED]


class _Deadline:
    """The end of the whole exchange, enforced on every socket it opens.

    requests' read timeout applies to each socket read, so a server trickling
    one byte at a time (in the headers, the TLS handshake or the body) could
    hold a call open for ever. When the deadline passes, a timer shuts the
    connection's sockets down, which wakes any blocked read. The timer holds
    duplicates of the sockets, so it never touches a descriptor the operating
    system has since handed to someone else.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer: threading.Timer | None = None

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self._expired or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        duplicate = sock.dup()
        with self._lock:
            self._sockets.append(duplicate)
            if self._expired:
                _shutdown(duplicate)
            elif self._timer is None:
                self._timer = threading.Timer(max(self.remaining(), 0), self._expire)
                self._timer.daemon = True
                self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPConnection(HTTPConnection):
    deadline: _Deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.deadline.watch(sock)
        return sock


class _WatchedHTTPSConnection(HTTPSConnection):
    deadline: _Deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.deadline.watch(sock)
        return sock


class _PinnedAdapter(HTTPAdapter):
    """Connects to the address in the URL (the one that was checked), with the real
    host name in SNI and in certificate verification, and every socket watched by
    the deadline. One adapter serves one hop of one call."""

    def __init__(self, *, tls_hostname: str, deadline: _Deadline) -> None:
        self._tls_hostname = tls_hostname
        self._deadline = deadline
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        watched = {"deadline": self._deadline}
        http_connection = type("EhrHTTPConnection", (_WatchedHTTPConnection,), watched)
        https_connection = type("EhrHTTPSConnection", (_WatchedHTTPSConnection,), watched)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("EhrHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_connection}),
            "https": type(
                "EhrHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_connection}
            ),
        }

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            # SNI and OpenSSL's hostname check use this name, not the IP in the URL.
            pool_kwargs["server_hostname"] = self._tls_hostname
        return host_params, pool_kwargs


def _ca_bundle() -> str:
    """The trusted certificate authorities: the public ones (certifi). Tests point this at their own CA."""
    return certifi.where()


def _exchange(
    method: str,
    url: str,
    headers: CaseInsensitiveDict[str],
    body: bytes | None,
    deadline: _Deadline,
    raise_for_status: bool,
) -> EhrResponse:
    sessions: list[requests.Session] = []
    try:
        target = _parse_target(url)
        for hop in range(MAX_REDIRECTS + 1):
            response = _send(target, method, headers, body, deadline, sessions)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return _finish(target, method, response, deadline, raise_for_status)
            response.close()
            if hop == MAX_REDIRECTS:
                raise EhrHttpError(
                    "too_many_redirects",
                    f"The server at {target.host} redirected more than {MAX_REDIRECTS} times: "
                    "enter the final address instead.",
                    permanent=True,
                    status=response.status_code,
                )
            next_target = _redirect_target(target, location)
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                # What browsers and requests do: the redirected request is a GET without a body.
                method = "GET" if method != "HEAD" else method
                body = None
                headers = _without(headers, "content-type", "content-length")
            if next_target.origin != target.origin:
                # Credentials are for the server they were meant for.
                headers = _without(headers, "authorization", "cookie")
            target = next_target
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        for session in sessions:
            session.close()
        deadline.close()


def _without(headers: CaseInsensitiveDict[str], *names: str) -> CaseInsensitiveDict[str]:
    return CaseInsensitiveDict({k: v for k, v in headers.items() if k.lower() not in names})


def _redirect_target(current: _Target, location: str) -> _Target:
    next_url = urljoin(current.url, location.strip())
    try:
        parts = urlsplit(next_url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise EhrHttpError(
            "bad_redirect",
            f"The server at {current.host} redirected to an address the connector cannot follow: "
            "enter the final https:// address instead.",
            permanent=True,
        )
    if parts.scheme == "http" and not is_insecure_host(parts.hostname):
        raise EhrHttpError(
            "redirect_to_http",
            f"The server at {current.host} redirected to a plain http:// address on {parts.hostname}: "
            "the connector only follows redirects to https. Enter the final https:// address instead.",
            permanent=True,
        )
    return _parse_target(next_url)


def _send(
    target: _Target,
    method: str,
    headers: CaseInsensitiveDict[str],
    body: bytes | None,
    deadline: _Deadline,
    sessions: list[requests.Session],
) -> requests.Response:
    """One request to one target, trying its checked addresses in turn if connecting fails."""
    addresses = _resolve(target, deadline)
    hop_headers = CaseInsensitiveDict(headers)
    hop_headers["Host"] = target.host_header
    for index, address in enumerate(addresses):
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _timeout_error(target.host, deadline)
        connect_timeout = min(float(settings.EHR_HTTP_CONNECT_TIMEOUT), remaining)
        session = requests.Session()
        sessions.append(session)
        # No proxies, .netrc or CA bundles from the environment: a proxy would
        # resolve the name itself and undo the address check.
        session.trust_env = False
        adapter = _PinnedAdapter(tls_hostname=target.host, deadline=deadline)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        try:
            return session.request(
                method,
                target.pinned_url(address),
                headers=hop_headers,
                data=body,
                allow_redirects=False,
                stream=True,
                timeout=(connect_timeout, remaining),
                verify=_ca_bundle(),
            )
        except requests.exceptions.RequestException as exc:
            last_address = index == len(addresses) - 1
            if not last_address and _is_connect_failure(exc) and not deadline.passed():
                continue
            raise _transport_error(exc, target.host, deadline) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _is_connect_failure(exc: requests.exceptions.RequestException) -> bool:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.SSLError) or not isinstance(
        exc, requests.exceptions.ConnectionError
    ):
        return False
    return _caused_by(exc, urllib3.exceptions.NewConnectionError)


def _caused_by(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        pending.extend(
            [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        )
    return False


def _transport_error(exc: BaseException, host: str, deadline: _Deadline) -> EhrHttpError:
    if isinstance(exc, requests.exceptions.ConnectTimeout) and not deadline.passed():
        seconds = _seconds(float(settings.EHR_HTTP_CONNECT_TIMEOUT))
        return EhrHttpError(
            "timeout",
            f"The server at {host} did not accept a connection within {seconds}: "
            f"check the URL and that {_reachable_from_here(host)}.",
            permanent=False,
        )
    if deadline.passed() or isinstance(exc, requests.exceptions.Timeout):
        return _timeout_error(host, deadline)
    if isinstance(exc, requests.exceptions.SSLError):
        if _caused_by(exc, (ssl.SSLCertVerificationError, ssl.CertificateError)):
            return EhrHttpError(
                "tls_untrusted",
                f"The TLS certificate of {host} is not trusted: it must be issued for {host} by a public "
                "certificate authority and sent with its full chain. Install a certificate from a public "
                "certificate authority, or use the public FHIR address of your EHR.",
                permanent=True,
            )
        return EhrHttpError(
            "tls_failed",
            f"A secure (TLS) connection to {host} could not be set up: check that the address really "
            "serves https and that the server supports TLS 1.2 or newer.",
            # Also what a handshake cut short by a busy server looks like.
            permanent=False,
        )
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return EhrHttpError(
            "bad_response",
            f"The server at {host} sent a response that could not be decoded: try again later.",
            permanent=False,
        )
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidHeader):
        return _invalid_url()
    return EhrHttpError(
        "unreachable",
        f"The server at {host} could not be reached: "
        f"check the URL and that {_reachable_from_here(host)}.",
        permanent=False,
    )


def _reachable_from_here(host: str) -> str:
    """What to check: a loopback address is this machine, where the EHR's server must be running."""
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if loopback:
        return "a server is listening there on this machine (is it running, on that port?)"
    return "it is reachable from the internet"


def _seconds(value: float) -> str:
    return f"{value:g} second" + ("" if value == 1 else "s")


def _timeout_error(host: str, deadline: _Deadline) -> EhrHttpError:
    return EhrHttpError(
        "timeout",
        f"The server at {host} did not answer completely within {_seconds(deadline.seconds)}: "
        "check that it is up and try again later.",
        permanent=False,
    )


def _finish(
    target: _Target,
    method: str,
    response: requests.Response,
    deadline: _Deadline,
    raise_for_status: bool,
) -> EhrResponse:
    status = response.status_code
    try:
        if not 200 <= status < 300 and raise_for_status:
            raise _status_error(target.host, status)
        payload = _read_body(target.host, response, deadline)
    finally:
        response.close()
    if not payload.strip() and (method != "GET" or status in (204, 205) or status >= 300):
        parsed: Any = {}
    else:
        try:
            parsed = json.loads(payload)
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            if not 200 <= status < 300:
                parsed = {}  # the caller asked for the status and gets it; the body is not usable
            else:
                raise _not_json_error(target.host, response.headers.get("Content-Type", ""), payload, parsed)
    return EhrResponse(
        status=status, json=parsed, url=target.url, headers=CaseInsensitiveDict(response.headers)
    )


def _read_body(host: str, response: requests.Response, deadline: _Deadline) -> bytes:
    limit = int(settings.EHR_HTTP_MAX_RESPONSE_BYTES)
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise _too_large_error(host, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        # Decoded (decompressed) bytes are counted, so a compressed bomb stops at the cap too.
        for chunk in response.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _too_large_error(host, limit)
            if deadline.passed():
                raise _timeout_error(host, deadline)
            chunks.append(chunk)
    except requests.exceptions.RequestException as exc:
        raise _transport_error(exc, host, deadline) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _transport_error(exc, host, deadline) from None
    if deadline.passed():
        # The deadline closes the socket, which can look like a normal end of the body.
        raise _timeout_error(host, deadline)
    return b"".join(chunks)


def _too_large_error(host: str, limit: int) -> EhrHttpError:
    return EhrHttpError(
        "too_large",
        f"The server at {host} sent more than {_format_bytes(limit)}, the most the connector accepts: "
        "check that the URL is the FHIR base URL of your EHR.",
        permanent=True,
    )


def _format_bytes(count: int) -> str:
    if count >= 1024 * 1024 and count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024)} MB"
    if count >= 1024 and count % 1024 == 0:
        return f"{count // 1024} kB"
    return f"{count} bytes"


def _status_error(host: str, status: int) -> EhrHttpError:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    if status in (401, 403):
        advice = "check that the URL is right and that this connector is allowed to use it."
    elif status == 404:
        advice = "check the URL: nothing was found at that address."
    elif status in TEMPORARY_CLIENT_STATUSES or status >= 500:
        advice = "the EHR server has a problem or is busy; try again later."
    else:
        advice = "check the URL and the connector's configuration in the EHR."
    return EhrHttpError(
        "bad_status",
        f"The server at {host} answered HTTP {status} ({phrase}): {advice}",
        permanent=400 <= status < 500 and status not in TEMPORARY_CLIENT_STATUSES,
        status=status,
    )


def _not_json_error(host: str, content_type: str, payload: bytes, parsed: Any) -> EhrHttpError:
    media_type = "".join(ch for ch in content_type.split(";", 1)[0].strip() if ch.isprintable())[:80]
    if not payload.strip():
        received = f"an empty body ({media_type})" if media_type else "an empty body"
    elif parsed is not None:
        received = "JSON that is not an object"
    else:
        received = media_type or "a body without a content type"
    return EhrHttpError(
        "not_json",
        f"The server at {host} answered with {received}, not a JSON document: "
        "check that the URL is the FHIR base URL of your EHR.",
        permanent=True,
    )


def guarded_post_bytes(url: str, body: bytes, *, headers: Mapping[str, str]) -> int:
    """POST `body` to an untrusted URL through the same guards as an EHR call; returns the HTTP status.

    For outbound webhooks (connector/webhooks/): the receiver's answer body is
    read within `EHR_HTTP_MAX_RESPONSE_BYTES` and thrown away, and redirects are
    not followed (a 3xx is returned as it is), since a signed delivery must
    reach the address the organization registered and no other.
    """
    request_headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(
        {"User-Agent": USER_AGENT, "Accept": "*/*"}
    )
    request_headers.update(headers)
    deadline = _Deadline(float(settings.EHR_HTTP_TOTAL_TIMEOUT))
    sessions: list[requests.Session] = []
    host = _host_for_messages(url)
    try:
        target = _parse_target(url)
        response = _send(target, "POST", request_headers, body, deadline, sessions)
        try:
            status = response.status_code
            _read_body(target.host, response, deadline)
        finally:
            response.close()
    except EhrHttpError as error:
        logger.warning("webhook POST %s failed: %s (status %s)", host, error.code, error.status)
        raise
    finally:
        for session in sessions:
            session.close()
        deadline.close()
    logger.info("webhook POST %s answered %s", host, status)
    return status
