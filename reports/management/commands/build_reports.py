"""Build the daily roll-ups: what is due (as the schedule does), or a given day or range."""

from __future__ import annotations

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from reports.services import allotment_warnings_send, rollup_build, rollups_build_all_due, rollups_build_due
from tenants.models import Tenant, TenantStatus
from tenants.scoping import all_tenants


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date; write it as YYYY-MM-DD.") from None


class Command(BaseCommand):
    help = (
        "Build report roll-ups. Without dates: everything due, as the nightly schedule does (catch-up, the "
        "last 7 days again, days with late events, then allotment warnings). With --date or --from/--to: "
        "rebuild exactly those local days (idempotent)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--date", help="One local day, YYYY-MM-DD.")
        parser.add_argument("--from", dest="first", help="First local day, YYYY-MM-DD.")
        parser.add_argument("--to", dest="last", help="Last local day, YYYY-MM-DD (included).")
        parser.add_argument(
            "--tenant",
            action="append",
            default=[],
            help="Microsoft 365 tenant ID or pk; repeat for several. Default: every enabled organization.",
        )
        parser.add_argument("--no-warnings", action="store_true", help="Do not send allotment warnings.")

    def handle(self, *args, **options):
        if options["date"] and (options["first"] or options["last"]):
            raise CommandError("Give --date, or --from and --to, not both.")
        first = last = None
        if options["date"]:
            first = last = _date(options["date"])
        elif options["first"] or options["last"]:
            if not (options["first"] and options["last"]):
                raise CommandError("--from needs --to, and --to needs --from.")
            first, last = _date(options["first"]), _date(options["last"])
            if first > last:
                raise CommandError(f"--from {first} is after --to {last}.")
        tenants = self._tenants(options["tenant"])
        if first is None and not options["tenant"] and not options["no_warnings"]:
            results = rollups_build_all_due()
            for result in results:
                self.stdout.write(str(result))
            self.stdout.write(self.style.SUCCESS(f"{len(results)} organization(s) had roll-ups due."))
            return
        built = 0
        for tenant in tenants:
            if first is None:
                result = rollups_build_due(tenant=tenant)
            else:
                result = rollup_build(tenant=tenant, first=first, last=last)
            if result is not None:
                built += 1
                self.stdout.write(f"{tenant.name}: {result}")
            if not options["no_warnings"] and first is None:
                allotment_warnings_send(tenant=tenant)
        self.stdout.write(self.style.SUCCESS(f"{built} organization(s) built."))

    def _tenants(self, wanted: list[str]) -> list[Tenant]:
        with all_tenants():
            if not wanted:
                return list(Tenant.objects.filter(status=TenantStatus.ENABLED).order_by("pk"))
            found = []
            for value in wanted:
                tenant = Tenant.objects.filter(microsoft_tenant_id=value).first()
                if tenant is None and value.isdigit():
                    tenant = Tenant.objects.filter(pk=int(value)).first()
                if tenant is None:
                    raise CommandError(f"No organization with tenant ID or pk {value!r}.")
                found.append(tenant)
            return found
