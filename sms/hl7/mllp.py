"""MLLP over TLS: the scheduling feed for interface engines that do not speak HTTPS.

Framing (HL7 MLLP release 2): each message is sent as 0x0B <message> 0x1C 0x0D and
answered with one ACK framed the same way, on the same connection, in order.

Authentication is the TLS client certificate. The handshake requires a
certificate that chains to `--client-ca`; the connection is then accepted only if
the SHA-256 thumbprint of that certificate is an organization's active uploaded
signing certificate, which decides the organization and the environment. The
same check is repeated for every message (see `TlsClientIdentity`), so replacing
the certificate in the portal cuts off a connection that is already open (within a
second, in every listener: the feed setup's shared token, sms/hl7/feed_setup.py).

The protocol pieces (`FrameReader`, `frame`, `MllpServer`) do not depend on the
management command, so tests run them directly.
"""

from __future__ import annotations

import hashlib
import logging
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass

from django.db import close_old_connections, connections
from django.utils import timezone

from sms.hl7.ack import ERROR, REJECT, ack_build
from sms.hl7.ingest import (
    MLLP,
    TlsClientIdentity,
    failure_answer,
    header_read,
    ingest_message,
    max_body_bytes,
)
from sms.hl7.parse import APPLICATION_INTERNAL_ERROR, SEGMENT_SEQUENCE_ERROR
from sms.models import SigningCertificate
from tenants.models import TenantStatus
from tenants.scoping import all_tenants

logger = logging.getLogger("sms.hl7.mllp")

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\r"
_BETWEEN_FRAMES = b" \t\r\n\x00"
HEAD_KEPT = 4096  # of an oversized message: enough for its MSH, to answer it
POLL_SECONDS = 0.5  # how quickly an idle connection notices a shutdown


def frame(payload: bytes) -> bytes:
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


class FramingError(Exception):
    """The peer does not speak MLLP (or never ends a frame): the connection is closed."""


@dataclass(frozen=True)
class Frame:
    payload: bytes  # the message; for an oversized one, only its first HEAD_KEPT bytes
    oversize: bool = False


class FrameReader:
    """Incremental MLLP de-framing: feed it what the socket returns, get the complete messages.

    Whitespace between frames is skipped (some senders add a newline after 0x1C 0x0D);
    anything else outside a frame is an error once it passes `max_bytes`. A frame
    larger than `max_bytes` is not buffered: its head is kept to answer it, the rest
    is discarded up to the end block, and past `16 * max_bytes` the connection is dropped.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._oversize = False
        self._discarded = 0
        self._junk = 0

    @property
    def partial(self) -> bool:
        """A frame has started and not ended (the peer is in the middle of sending)."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        position = 0
        while position < len(data):
            if not self._in_frame:
                start = data.find(START_BLOCK, position)
                outside = data[position:] if start < 0 else data[position:start]
                self._junk += len(outside.strip(_BETWEEN_FRAMES))
                if self._junk > self.max_bytes:
                    raise FramingError("data outside MLLP frames (expected 0x0B ... 0x1C 0x0D)")
                if start < 0:
                    break
                self._in_frame, self._buffer, self._oversize, self._discarded = True, bytearray(), False, 0
                position = start + 1
                continue
            end = data.find(END_BLOCK, position)
            chunk = data[position:] if end < 0 else data[position:end]
            self._take(chunk)
            if end < 0:
                break
            frames.append(Frame(bytes(self._buffer), oversize=self._oversize))
            self._in_frame, self._buffer = False, bytearray()
            position = end + 1  # the carriage return after the end block is skipped as whitespace
        return frames

    def _take(self, chunk: bytes) -> None:
        if self._oversize:
            self._discarded += len(chunk)
            if self._discarded > 16 * self.max_bytes:
                raise FramingError("an MLLP frame never ended")
            return
        self._buffer += chunk
        if len(self._buffer) > self.max_bytes:
            self._discarded = max(0, len(self._buffer) - HEAD_KEPT)
            del self._buffer[HEAD_KEPT:]
            self._oversize = True


# --- who is connecting ----------------------------------------------------------------------


def thumbprint(der_certificate: bytes) -> str:
    return hashlib.sha256(der_certificate).hexdigest().upper()


def certificate_for_peer(
    der_certificate: bytes | None, *, tenant_id: str | None = None, environment: str | None = None
) -> SigningCertificate | None:
    """The active uploaded certificate whose thumbprint is the client's, across organizations, or None.

    None as well when it is ambiguous (the same certificate active for two
    organizations or both environments): the listener can be pinned with
    `tenant_id` / `environment` for that case.
    """
    if not der_certificate:
        return None
    now = timezone.now()
    with all_tenants():
        matches = SigningCertificate.objects.filter(
            thumbprint_sha256=thumbprint(der_certificate),
            active=True,
            tenant__status=TenantStatus.ENABLED,
            not_before__lte=now,
            not_after__gt=now,
        ).select_related("tenant")
        if tenant_id:
            matches = matches.filter(tenant__microsoft_tenant_id=tenant_id)
        if environment:
            matches = matches.filter(environment=environment)
        found = list(matches[:2])
    if len(found) > 1:
        logger.warning(
            "mllp client certificate %s… is active for several organizations or environments: refused "
            "(start the listener with --tenant/--environment)",
            thumbprint(der_certificate)[:16],
        )
        return None
    return found[0] if found else None


def server_ssl_context(*, certfile: str, keyfile: str | None, client_ca: str) -> ssl.SSLContext:
    """TLS 1.2+ with the server's certificate; client certificates required and checked against `client_ca`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.load_verify_locations(cafile=client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


# --- answering ------------------------------------------------------------------------------------


def answer(certificate: SigningCertificate, item: Frame, *, max_bytes: int) -> bytes | None:
    """The ACK for one frame, or None when the connection must be closed (no longer authorized)."""
    if item.oversize:
        logger.warning("mllp message larger than %d bytes refused", max_bytes)
        return ack_build(
            header_read(item.payload),
            REJECT,
            reason=f"the message is larger than {max_bytes} bytes",
            error_code=APPLICATION_INTERNAL_ERROR,
        ).encode()
    close_old_connections()
    try:
        result = ingest_message(
            tenant=certificate.tenant,
            environment=certificate.environment,
            body=item.payload,
            signature=None,
            via=MLLP,
            peer=TlsClientIdentity(certificate.thumbprint_sha256),
        )
    except Exception as error:  # noqa: BLE001 - the sender must get an answer; no detail, it may hold PHI
        # Only before the sender is authenticated (ingest_message answers everything after):
        # the organization's set-up could not be read, which a resend may get past.
        logger.error("mllp message not processed: %s", type(error).__name__)
        reason, code = failure_answer(error)
        return ack_build(header_read(item.payload), ERROR, reason=reason, error_code=code).encode()
    if result.status_code == 200:
        return result.ack.encode()
    if result.status_code == 401:
        return None
    # Not HL7 at all (400) or too large (413): there is no header to answer, but the
    # sender waits for one ACK per frame.
    return ack_build(
        header_read(item.payload), REJECT, reason=result.error, error_code=SEGMENT_SEQUENCE_ERROR
    ).encode()


class MllpHandler(socketserver.BaseRequestHandler):
    server: MllpServer

    def handle(self) -> None:
        connection: ssl.SSLSocket = self.request
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        try:
            connection.settimeout(self.server.handshake_timeout)
            connection.do_handshake()
            certificate = certificate_for_peer(
                connection.getpeercert(binary_form=True),
                tenant_id=self.server.tenant_id,
                environment=self.server.environment,
            )
            if certificate is None:
                der = connection.getpeercert(binary_form=True) or b""
                logger.warning(
                    "mllp connection from %s refused: client certificate %s… is no organization's "
                    "active signing certificate",
                    peer,
                    thumbprint(der)[:16],
                )
                return
            logger.info(
                "mllp connection from %s for tenant %s (%s)",
                peer,
                certificate.tenant_id,
                certificate.environment,
            )
            self._serve(connection, certificate)
        except (ssl.SSLError, OSError) as error:
            logger.info("mllp connection from %s closed: %s", peer, type(error).__name__)
        except FramingError as error:
            logger.warning("mllp connection from %s closed: %s", peer, error)
        finally:
            connections.close_all()  # this thread's database connections

    def _serve(self, connection: ssl.SSLSocket, certificate: SigningCertificate) -> None:
        reader = FrameReader(self.server.max_bytes)
        connection.settimeout(POLL_SECONDS)
        last_data = time.monotonic()
        while True:
            if self.server.stopping.is_set() and not reader.partial:
                return
            try:
                data = connection.recv(65536)
            except TimeoutError:
                waited = time.monotonic() - last_data
                limit = self.server.read_timeout if reader.partial else self.server.idle_timeout
                if waited > limit:
                    logger.info("mllp connection closed after %.0f s without data", waited)
                    return
                continue
            if not data:
                return
            last_data = time.monotonic()
            for item in reader.feed(data):
                reply = answer(certificate, item, max_bytes=self.server.max_bytes)
                if reply is None:
                    logger.warning("mllp connection closed: the client certificate is no longer active")
                    return
                connection.settimeout(self.server.read_timeout)
                connection.sendall(frame(reply))
                connection.settimeout(POLL_SECONDS)


class MllpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """One thread per connection, at most `max_connections` at once; `stop()` finishes the messages in flight."""

    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True  # server_close() waits for the connection threads

    def __init__(
        self,
        address: tuple[str, int],
        ssl_context: ssl.SSLContext,
        *,
        tenant_id: str | None = None,
        environment: str | None = None,
        max_bytes: int | None = None,
        read_timeout: float = 30.0,
        idle_timeout: float = 600.0,
        handshake_timeout: float = 10.0,
        max_connections: int = 50,
    ) -> None:
        self.ssl_context = ssl_context
        self.tenant_id = tenant_id
        self.environment = environment
        self.max_bytes = max_bytes or max_body_bytes()
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, MllpHandler)

    def get_request(self):
        sock, address = super().get_request()
        # The handshake happens in the connection's thread, under a timeout, not in the accept loop.
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            logger.warning("mllp connection from %s refused: too many connections", client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def stop(self) -> None:
        """Stop accepting, let each connection finish the message it is handling, then close."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
