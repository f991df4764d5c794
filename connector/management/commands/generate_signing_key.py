"""Write a new RS384 signing key for private_key_jwt, to list first in SMART_SIGNING_KEY_FILES."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from connector.signing_keys import generate_private_key_pem


class Command(BaseCommand):
    help = "Generate an RSA private key (PEM) for the connector's SMART client assertions."

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, help="Where to write the PEM file (mode 600).")

    def handle(self, *args, **options):
        path = Path(options["out"])
        if path.exists():
            raise CommandError(
                f"{path} exists; choose a new file so the current key keeps working during rotation."
            )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(generate_private_key_pem())
        self.stdout.write(
            f"Wrote {path}. Put it first in SMART_SIGNING_KEY_FILES and keep the old file listed until every "
            "EHR has fetched /.well-known/jwks.json again."
        )
