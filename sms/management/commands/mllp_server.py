"""Listen for HL7v2 scheduling messages over MLLP with TLS client certificates.

    python manage.py mllp_server --certfile server.pem --keyfile server.key --client-ca ehr-ca.pem

The client certificate decides the organization and environment: it must be an
organization's active uploaded signing certificate (matched by SHA-256
thumbprint). SIGTERM or Ctrl-C stops accepting connections and lets each
connection finish the message it is handling.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from connector.models import Environment
from sms.hl7.ingest import max_body_bytes
from sms.hl7.mllp import MllpServer, server_ssl_context


class Command(BaseCommand):
    help = "Receive HL7v2 SIU messages over MLLP/TLS; the client certificate identifies the organization."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="0.0.0.0", help="Address to bind (default all interfaces).")  # noqa: S104
        parser.add_argument("--port", type=int, default=2575, help="Port (default 2575, the HL7 MLLP port).")
        parser.add_argument(
            "--certfile", required=True, help="The server's certificate (PEM, chain allowed)."
        )
        parser.add_argument("--keyfile", help="The server's private key (PEM), if not in --certfile.")
        parser.add_argument(
            "--client-ca",
            required=True,
            help="CA certificates (PEM) the EHR's client certificates must chain to. For a "
            "self-signed EHR certificate, that certificate itself.",
        )
        parser.add_argument("--tenant", help="Only this organization (Microsoft tenant ID).")
        parser.add_argument("--environment", choices=Environment.values, help="Only this environment.")
        parser.add_argument(
            "--max-bytes", type=int, default=0, help="Largest message (default HL7_MAX_BODY_BYTES)."
        )
        parser.add_argument(
            "--read-timeout",
            type=float,
            default=30.0,
            help="Seconds a started message may stall before the connection is closed.",
        )
        parser.add_argument(
            "--idle-timeout",
            type=float,
            default=600.0,
            help="Seconds without any message before an idle connection is closed.",
        )
        parser.add_argument("--max-connections", type=int, default=50)

    def handle(self, *args, **options) -> None:
        try:
            context = server_ssl_context(
                certfile=options["certfile"], keyfile=options["keyfile"], client_ca=options["client_ca"]
            )
        except (OSError, ValueError) as error:
            raise CommandError(f"TLS set-up failed: {error}") from error
        server = MllpServer(
            (options["host"], options["port"]),
            context,
            tenant_id=options["tenant"],
            environment=options["environment"],
            max_bytes=options["max_bytes"] or max_body_bytes(),
            read_timeout=options["read_timeout"],
            idle_timeout=options["idle_timeout"],
            max_connections=options["max_connections"],
        )
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        # serve_forever runs in a thread: shutdown() must be called from another one.
        serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
        serving.start()
        host, port = server.server_address[:2]
        self.stdout.write(f"MLLP/TLS listening on {host}:{port} (client certificates required)")
        stop.wait()
        self.stdout.write("Stopping: finishing the messages in flight…")
        server.stop()
        self.stdout.write("Stopped.")
