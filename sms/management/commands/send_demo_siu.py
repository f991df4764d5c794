"""Send a signed SIU^S12 to the demo's own scheduling feed, as an EHR would (development only).

On first use it makes a key pair and a self-signed certificate under var/ and
uploads the certificate for the demo organization's test environment. Then it
signs a made-up scheduling message (visit tomorrow, a 555 mobile number) and
POSTs it to the ingest URL of the SMS configuration integration record, and
prints the HL7 ACK. The worker's output then shows the confirmation text
(console SMS backend).

    python manage.py send_demo_siu [--minutes-from-now 1500] [--phone +14155550123]
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from connector.demo import DEMO_EPIC_TENANT_ID
from sms.models import SigningCertificate
from sms.services.certificates import certificate_upload
from tenants.models import Tenant
from tenants.scoping import tenant_scope


def _demo_key_and_certificate() -> tuple[rsa.RSAPrivateKey, bytes]:
    key_path = Path(settings.VAR_DIR) / "demo-hl7-signing-key.pem"
    cert_path = Path(settings.VAR_DIR) / "demo-hl7-signing-cert.pem"
    if not key_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Demo EHR scheduling feed")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return key, cert_path.read_bytes()


def _message(start: datetime, phone: str) -> bytes:
    control = f"DEMO{secrets.token_hex(6).upper()}"
    appointment = f"{secrets.randbelow(10**9):09d}"
    national = phone.removeprefix("+1")
    segments = [
        f"MSH|^~\\&|EPIC|DEMO|VCONNECT|VIRTUALCARE|{datetime.now(UTC):%Y%m%d%H%M%S}+0000||SIU^S12^SIU_S12|{control}|P|2.5.1",
        f"SCH|{appointment}^EPIC|{appointment}^EPIC|||||VIDEO^Video visit||30|MIN|^^30^{start:%Y%m%d%H%M%S}+0000",
        f"TQ1|1||||||{start:%Y%m%d%H%M%S}+0000|{start + timedelta(minutes=30):%Y%m%d%H%M%S}+0000",
        f"PID|1||DEMO{appointment}^^^EPI^MRN||DEMO^PATIENT||19800101|U|||||^PRN^CP^^1^{national[:3]}^{national[3:]}|||ENG",
        "AIL|1|A|DEPT-101^^^DEMO",
    ]
    return "\r".join(segments).encode()


class Command(BaseCommand):
    help = "Sign and send a demo SIU^S12 to this installation's scheduling feed (development only)."

    def add_arguments(self, parser):
        parser.add_argument("--minutes-from-now", type=int, default=26 * 60)
        parser.add_argument("--phone", default="+14155550123")

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("send_demo_siu is for the demo; it refuses to run with DEBUG=false.")
        tenant = Tenant.objects.filter(microsoft_tenant_id=DEMO_EPIC_TENANT_ID).first()
        if tenant is None:
            raise CommandError("Run `manage.py seed_demo` first: the demo organization is missing.")
        key, certificate_pem = _demo_key_and_certificate()
        with tenant_scope(tenant):
            active = SigningCertificate.objects.filter(environment="test", active=True).first()
            if active is None or active.pem.strip() != certificate_pem.decode().strip():
                certificate_upload(tenant=tenant, environment="test", data=certificate_pem, uploaded_by=None)
                self.stdout.write("Uploaded the demo signing certificate for the test environment.")
        start = (datetime.now(UTC) + timedelta(minutes=options["minutes_from_now"])).replace(
            second=0, microsecond=0
        )
        body = _message(start, options["phone"])
        signature = base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
        url = f"{settings.PUBLIC_BASE_URL}/sms/ingest/{tenant.microsoft_tenant_id}/test/"
        response = requests.post(url, data=body, headers={"X-HL7-Signature": signature}, timeout=30)
        self.stdout.write(f"POST {url} -> HTTP {response.status_code}")
        self.stdout.write(response.text.replace("\r", "\n"))
        if "|AR|" in response.text:
            self.stdout.write(
                "Refused: approve the demo endpoint first (sign in as demo-approver, Setup > Approve, "
                "sign in to the sandbox EHR as ANALYST1)."
            )
            return
        with tenant_scope(tenant):
            from sms.models import OutboundMessage

            latest = OutboundMessage.objects.order_by("-created_at")[:3]
            for message in sorted(latest, key=lambda m: m.send_at):
                self.stdout.write(
                    f"  {message.get_kind_display()}: {message.get_state_display().lower()}, "
                    f"sends at {message.send_at:%Y-%m-%d %H:%M} UTC (quiet hours move texts into the day)"
                )
