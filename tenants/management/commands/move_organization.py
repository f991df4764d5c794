"""Move an organization between regions: export, import (verified), finish (delete at the source).

    manage.py move_organization export <tenant id> --out org.move      # source region
    manage.py move_organization import org.move [--key-file org.move.key]   # target region
    manage.py move_organization finish <tenant id> --export org.move   # source region

See tenants/moving.py and docs/deployment.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants import moving
from tenants.internal_api import locate
from tenants.models import Tenant, normalize_microsoft_tenant_id
from tenants.regions import current_region, region_label


class Command(BaseCommand):
    help = "Move an organization to another region: export, import, finish."

    def add_arguments(self, parser):
        steps = parser.add_subparsers(dest="step", required=True)
        export = steps.add_parser("export", help="Write the organization's rows to an encrypted move file.")
        export.add_argument("tenant_id")
        export.add_argument("--out", required=True, help="The move file; its key is written to <out>.key.")
        load = steps.add_parser("import", help="Insert a move file's rows here and verify them.")
        load.add_argument("file")
        load.add_argument("--key-file", help="Default: <file>.key")
        finish = steps.add_parser("finish", help="Delete the source rows once the target region hosts them.")
        finish.add_argument("tenant_id")
        finish.add_argument("--export", required=True, help="The move file written by export.")
        finish.add_argument("--key-file", help="Default: <export>.key")

    def handle(self, *args, **options):
        try:
            getattr(self, f"_{options['step']}")(options)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error

    def _tenant(self, tenant_id: str) -> Tenant:
        try:
            tid = normalize_microsoft_tenant_id(tenant_id)
        except ValueError as error:
            raise CommandError(f"{tenant_id!r} is not a Microsoft 365 tenant ID (a GUID).") from error
        tenant = Tenant.objects.filter(microsoft_tenant_id=tid).first()
        if tenant is None:
            raise CommandError(f"No organization with tenant ID {tid} in this region.")
        return tenant

    def _read(self, path: str, key_file: str | None) -> moving.MoveFile:
        data_path, key_path = Path(path), Path(key_file or f"{path}.key")
        if not data_path.exists() or not key_path.exists():
            raise CommandError(f"Give the move file and its key: {data_path} and {key_path} must both exist.")
        return moving.read_move_file(data_path.read_bytes(), key_path.read_text())

    def _export(self, options):
        tenant = self._tenant(options["tenant_id"])
        data, key = moving.export_organization(tenant, source_region=current_region())
        out = Path(options["out"])
        out.write_bytes(data)
        key_path = Path(f"{out}.key")
        key_path.write_text(key)
        os.chmod(key_path, 0o600)
        self.stdout.write(
            f"Exported {tenant.name}: {out} (encrypted) and its key {key_path}. Copy both to the target "
            "region and run: manage.py move_organization import " + out.name
        )

    def _import(self, options):
        move = self._read(options["file"], options.get("key_file"))
        tenant = moving.import_organization(move)
        rows = sum(entry["rows"] for entry in move.manifest["digest"].values())
        self.stdout.write(
            f"Imported {tenant.name} into {region_label(current_region())}: {rows} rows, verified. It stays "
            "suspended: enable it in the admin once the EHR team has the new integration records. Then run "
            f"'move_organization finish {tenant.microsoft_tenant_id} --export <file>' in the source region."
        )
        self._refresh_records(tenant)

    def _refresh_records(self, tenant: Tenant) -> None:
        from connector.models import FhirEndpoint
        from connector.services.records import integration_records_produce
        from tenants.scoping import tenant_scope

        with tenant_scope(tenant):
            for endpoint in FhirEndpoint.objects.filter(tenant=tenant):
                integration_records_produce(endpoint=endpoint)

    def _finish(self, options):
        tenant = self._tenant(options["tenant_id"])
        move = self._read(options["export"], options.get("key_file"))
        target = locate(tenant_id=tenant.microsoft_tenant_id)
        deleted = moving.delete_moved_organization(tenant, move, target_region=target)
        self.stdout.write(
            f"{tenant.name} now lives in {region_label(target)}; deleted here: "
            + ", ".join(f"{label} {count}" for label, count in deleted.items() if count)
        )
