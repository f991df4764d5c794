"""The third-party SMART on FHIR EHR (../shared/peers): smart-launcher-v2 in front of Medplum.

Tests that must hold against an EHR nobody on this project wrote use the session
fixture `smart_peer` (tests/conftest.py). It reuses a peer that already answers on
the configured ports, or starts one with `start-smart-peer` (which leaves it running
for the next test run; `start-smart-peer --stop` stops it). Where the peer cannot be
started (no Node.js, no ../shared), the tests are skipped locally and fail in CI
(`CI=true`), so CI never passes without having talked to the peer.

Ports: SMART_PEER_FHIR_PORT (default 8103) and SMART_PEER_LAUNCHER_PORT (8445);
the script: SMART_PEER_SCRIPT (default ../shared/peers/start-smart-peer).

What the peer sends and what it does not (no fhirContext, no appointment in the
token; Encounter/enc1 -> Appointment/appt1) is in ../shared/peers/README.md.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SCRIPT = REPO.parent / "shared" / "peers" / "start-smart-peer"

# Positions in the launcher's launch code (a base64url JSON array; see the peer's README).
LAUNCH_TYPES = {
    "provider-ehr": 0,
    "patient-portal": 1,
    "provider-standalone": 2,
    "patient-standalone": 3,
    "backend-service": 4,
}
CLIENT_TYPES = {"public": 0, "confidential-symmetric": 1, "confidential-asymmetric": 2, "backend-service": 3}


def launch_code(
    *,
    launch_type: str = "provider-ehr",
    patient: str = "p1",
    provider: str = "dr1",
    encounter: str = "enc1",
    skip_login: bool = True,
    skip_auth: bool = True,
    sim_ehr: bool = False,
    scope: str = "",
    redirect_uris: str = "",
    client_id: str = "",
    client_secret: str = "",
    auth_error: str = "",
    jwks_url: str = "",
    jwks: str = "",
    client_type: str = "public",
    pkce: int = 1,
    fhir_server: str = "",
) -> str:
    """The launcher's launch code for these options (its src/isomorphic/codec.ts, 17 positions)."""
    values: list[Any] = [
        LAUNCH_TYPES[launch_type],
        patient,
        provider,
        encounter,
        int(skip_login),
        int(skip_auth),
        int(sim_ehr),
        scope,
        redirect_uris,
        client_id,
        client_secret,
        auth_error,
        jwks_url,
        jwks,
        CLIENT_TYPES[client_type],
        pkce,
        fhir_server,
    ]
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class SmartPeer:
    fhir_port: int
    launcher_port: int

    @property
    def launcher_url(self) -> str:
        return f"http://127.0.0.1:{self.launcher_port}"

    @property
    def fhir_base(self) -> str:
        """The SMART FHIR R4 base (the `iss`): public client, PKCE when the client sends it."""
        return f"{self.launcher_url}/v/r4/fhir"

    @property
    def direct_fhir(self) -> str:
        """Medplum itself, no auth: for test set-up and for checking what the connector wrote."""
        return f"http://127.0.0.1:{self.fhir_port}"

    def sim_base(self, **options: Any) -> str:
        """A FHIR base whose authorize/token calls carry these launch options (e.g. a
        confidential-asymmetric client with its jwks_url)."""
        return f"{self.launcher_url}/v/r4/sim/{launch_code(**options)}/fhir"

    def ehr_launch_url(self, launch_uri: str, *, iss: str | None = None, **options: Any) -> str:
        """What the EHR's button opens: `<launch_uri>?iss=...&launch=<code>` (provider-ehr by default)."""
        separator = "&" if "?" in launch_uri else "?"
        query = urlencode({"iss": iss or self.fhir_base, "launch": launch_code(**options)})
        return f"{launch_uri}{separator}{query}"

    def read(self, reference: str) -> dict:
        """GET a resource straight from the FHIR server (`Appointment/appt1`)."""
        response = requests.get(f"{self.direct_fhir}/{reference}", timeout=10)
        response.raise_for_status()
        return response.json()

    def search(self, resource_type: str, **params: str) -> list[dict]:
        response = requests.get(f"{self.direct_fhir}/{resource_type}", params=params, timeout=10)
        response.raise_for_status()
        return [entry["resource"] for entry in response.json().get("entry", [])]

    def put(self, resource: dict) -> dict:
        """Create or replace a resource (test set-up: an appointment for today, a second patient)."""
        reference = f"{resource['resourceType']}/{resource['id']}"
        response = requests.put(
            f"{self.direct_fhir}/{reference}",
            data=json.dumps(resource),
            headers={"Content-Type": "application/fhir+json"},
            timeout=10,
        )
        assert response.status_code in (200, 201), response.text[:500]
        return response.json()

    def answers(self) -> bool:
        try:
            fhir = requests.get(f"{self.direct_fhir}/metadata", timeout=3)
            smart = requests.get(f"{self.fhir_base}/.well-known/smart-configuration", timeout=3)
        except requests.RequestException:
            return False
        return fhir.ok and smart.ok


def peer_from_environment() -> SmartPeer:
    return SmartPeer(
        fhir_port=int(os.environ.get("SMART_PEER_FHIR_PORT", "8103")),
        launcher_port=int(os.environ.get("SMART_PEER_LAUNCHER_PORT", "8445")),
    )


class PeerUnavailable(RuntimeError):
    pass


def ensure_running(peer: SmartPeer) -> None:
    """Start the peer unless it already answers; raise PeerUnavailable with the reason."""
    if peer.answers():
        return
    script = Path(os.environ.get("SMART_PEER_SCRIPT", str(DEFAULT_SCRIPT)))
    if not script.exists():
        raise PeerUnavailable(f"{script} not found (the peer lives in ../shared/peers)")
    if shutil.which("node") is None:
        raise PeerUnavailable("Node.js is not installed (the peer needs node and npm)")
    result = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [
            "bash",
            str(script),
            "--fhir-port",
            str(peer.fhir_port),
            "--launcher-port",
            str(peer.launcher_port),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not peer.answers():
        raise PeerUnavailable(f"start-smart-peer failed: {result.stderr[-2000:]}")
