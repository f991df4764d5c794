"""Load the demo organizations, one user per role, and a support account. Safe to run again."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from tenants.models import DataRegion, EhrVendor, Membership, Role, Tenant, TenantStatus
from tenants.scoping import tenant_scope

DEMO_ORGANIZATIONS = [
    {
        "name": "Contoso Health (demo)",
        "microsoft_tenant_id": "7d3c2a4e-1b5f-4c8e-9a0d-3e6f1b2c4d5a",
        "ehr_vendor": EhrVendor.EPIC,
        "data_region": DataRegion.AMERICAS,
        "members": [
            ("demo-admin", Role.ADMINISTRATOR, ""),
            ("demo-approver", Role.EHR_APPROVER, "ANALYST1"),
            ("demo-viewer", Role.VIEWER, ""),
        ],
    },
    {
        "name": "Fabrikam Clinics (demo)",
        "microsoft_tenant_id": "2f9e8d7c-6b5a-4938-8271-6a5b4c3d2e1f",
        "ehr_vendor": EhrVendor.ORACLE_HEALTH,
        "data_region": DataRegion.EUROPE,
        "members": [
            ("demo-fabrikam-admin", Role.ADMINISTRATOR, ""),
            # One person in two organizations, to show the organization switcher.
            ("demo-admin", Role.VIEWER, ""),
        ],
    },
]


class Command(BaseCommand):
    help = "Create the demo organizations and their users (development only)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--support-password", help="Password of the 'support' admin account (random if omitted)."
        )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo refuses to run in production mode (DEBUG=false).")
        user_model = get_user_model()
        for spec in DEMO_ORGANIZATIONS:
            tenant, _ = Tenant.objects.update_or_create(
                microsoft_tenant_id=spec["microsoft_tenant_id"],
                defaults={
                    "name": spec["name"],
                    "ehr_vendor": spec["ehr_vendor"],
                    "data_region": spec["data_region"],
                    "status": TenantStatus.ENABLED,
                },
            )
            for username, role, ehr_username in spec["members"]:
                user, created = user_model.objects.get_or_create(
                    username=username, defaults={"email": f"{username}@example.org"}
                )
                if created:
                    user.set_unusable_password()
                    user.save()
                with tenant_scope(tenant):
                    Membership.objects.update_or_create(
                        tenant=tenant, user=user, defaults={"role": role, "ehr_username": ehr_username}
                    )
        support, created = user_model.objects.get_or_create(
            username="support",
            defaults={"email": "support@example.org", "is_staff": True, "is_superuser": True},
        )
        password = options.get("support_password")
        if created or password:
            password = password or secrets.token_urlsafe(12)
            support.set_password(password)
            support.save()
            self.stdout.write(f"Support admin: support / {password}")
        call_command("seed_sandbox_ehr")
        self.stdout.write(self.style.SUCCESS("Demo organizations and users are ready."))
