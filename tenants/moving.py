"""Moving an organization between regions: export, verified import, then deletion at the source.

Regions share no database, so a move is an explicit operator step (docs/deployment.md):

1. in the source region, suspend the organization (nothing may change while it moves), then
   `move_organization export <tenant id> --out org.move` writes every row the organization owns
   (its tenant, members, endpoints, records, visits, events, appointments, texts, roll-ups and
   their audit history) to one file, encrypted with a key written beside it (`org.move.key`);
2. in the target region, `move_organization import org.move` inserts the rows with new primary
   keys (foreign keys remapped), re-encrypts protected fields with the target's keys, and checks
   that what was written equals what was exported (row counts and a digest of every value);
3. back in the source region, `move_organization finish <tenant id> --export org.move` asks the
   target region (the signed lookup) whether it now hosts the organization, checks that the
   source rows still equal the export, and only then deletes them.

The organization stays suspended in the target until support enables it there; its
integration records are produced again with the target's addresses, which the EHR team
must update.

Models are found generically: every model with a foreign key to Tenant, their audit-history
twins, and the users those rows name (matched by username in the target).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core import serializers
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction

from connector.lookup_hash import LookupHashField
from tenants.models import Tenant, TenantStatus
from tenants.scoping import all_tenants

FORMAT = "ehr-connector-organization-move/1"
USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active")


class LosslessJSONEncoder(DjangoJSONEncoder):
    """DjangoJSONEncoder, but times keep their microseconds (it cuts them to milliseconds)."""

    def default(self, o):
        if isinstance(o, datetime.datetime | datetime.time):
            return o.isoformat()
        return super().default(o)


@dataclass
class MoveFile:
    manifest: dict
    users: list[dict]
    rows: dict[str, list[dict]]  # model label -> serialized rows, in dependency order


# --- which models, in which order -----------------------------------------------------------


def _is_history(model) -> bool:
    return hasattr(model, "instance_type") and model.__name__.startswith("Historical")


def _is_link(field) -> bool:
    """A foreign key or one-to-one field (a column holding another row's key)."""
    return isinstance(field, models.ForeignKey)


def _points_at(field, model) -> bool:
    return _is_link(field) and field.related_model is model


def owned_models() -> list[type[models.Model]]:
    """Tenant first, then every model with a tenant foreign key in dependency order, history last."""
    user_model = get_user_model()
    owned = [
        m
        for m in apps.get_models()
        if m is not Tenant
        and not _is_history(m)
        and any(_points_at(f, Tenant) for f in m._meta.concrete_fields)
    ]
    ordered: list[type[models.Model]] = [Tenant]
    remaining = list(owned)
    while remaining:
        progressed = False
        for model in list(remaining):
            needs = {
                f.related_model
                for f in model._meta.concrete_fields
                if _is_link(f) and f.related_model not in (Tenant, user_model, model)
            }
            if needs <= set(ordered) | ({m for m in needs if m not in owned}):
                ordered.append(model)
                remaining.remove(model)
                progressed = True
        if not progressed:  # a cycle: keep the rest in app order (nullable links are remapped later)
            ordered += remaining
            break
    histories = [m for m in apps.get_models() if _is_history(m) and m.instance_type in ordered]
    return ordered + histories


def _rows_of(model, tenant: Tenant) -> models.QuerySet:
    manager = model._base_manager
    if model is Tenant:
        return manager.filter(pk=tenant.pk)
    if _is_history(model) and model.instance_type is Tenant:
        return manager.filter(id=tenant.pk)
    return manager.filter(tenant_id=tenant.pk)


def _user_fields(model) -> list[str]:
    user_model = get_user_model()
    return [f.attname for f in model._meta.concrete_fields if _is_link(f) and f.related_model is user_model]


# --- digest: what must survive the move ---------------------------------------------------------


def _content(model, fields: dict) -> dict:
    """A row's values without its keys: primary keys and foreign keys change in a move."""
    skip = {f.name for f in model._meta.concrete_fields if f.is_relation or f.primary_key}
    # Lookup hashes are made again on import with the target region's PHONE_HASH_KEY (connector/lookup_hash.py).
    skip |= {f.name for f in model._meta.concrete_fields if isinstance(f, LookupHashField)}
    if _is_history(model):
        skip |= {"id", "history_id"}
    return {name: value for name, value in fields.items() if name not in skip}


def digest(rows: dict[str, list[dict]]) -> dict[str, dict]:
    summary = {}
    for label, records in rows.items():
        model = apps.get_model(label)
        lines = sorted(
            json.dumps(_content(model, r["fields"]), sort_keys=True, cls=LosslessJSONEncoder) for r in records
        )
        summary[label] = {"rows": len(lines), "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}
    return summary


def serialize_organization(tenant: Tenant) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    with all_tenants():
        for model in owned_models():
            queryset = _rows_of(model, tenant).order_by("pk")
            rows[model._meta.label] = serializers.serialize("python", queryset)
    return rows


# --- export ---------------------------------------------------------------------------------------


def _visits_in_progress(tenant: Tenant) -> int:
    from connector.models import Visit, VisitState

    with all_tenants():
        return Visit.objects.filter(tenant=tenant, state=VisitState.IN_PROGRESS).count()


def _require_movable(tenant: Tenant) -> None:
    if tenant.status != TenantStatus.SUSPENDED:
        raise ValidationError(
            f"Suspend {tenant.name} first (admin: Organizations, action 'Suspend'): nothing may change while "
            "it moves. Its users cannot sign in until it is enabled in the new region."
        )
    busy = _visits_in_progress(tenant)
    if busy:
        raise ValidationError(
            f"{busy} visit(s) of {tenant.name} are in progress; move the organization when they have ended."
        )


def export_organization(tenant: Tenant, *, source_region: str) -> tuple[bytes, str]:
    """The encrypted move file and its key."""
    _require_movable(tenant)
    rows = serialize_organization(tenant)
    user_ids = {
        value
        for label, records in rows.items()
        for record in records
        for name in _user_fields(apps.get_model(label))
        if (value := record["fields"].get(name.removesuffix("_id"))) is not None
    }
    users = list(get_user_model().objects.filter(pk__in=user_ids).values("pk", *USER_FIELDS))
    manifest = {
        "format": FORMAT,
        "tenant_id": tenant.microsoft_tenant_id,
        "name": tenant.name,
        "source_region": source_region,
        "digest": digest(rows),
    }
    payload = json.dumps(
        {"manifest": manifest, "users": users, "rows": rows}, cls=LosslessJSONEncoder
    ).encode()
    key = Fernet.generate_key()
    return Fernet(key).encrypt(payload), key.decode()


def read_move_file(data: bytes, key: str) -> MoveFile:
    try:
        payload = json.loads(Fernet(key.strip().encode()).decrypt(data))
    except (InvalidToken, ValueError) as error:
        raise ValidationError(
            "The move file cannot be read with this key: give the .key file written beside it at export."
        ) from error
    if payload.get("manifest", {}).get("format") != FORMAT:
        raise ValidationError(f"This is not a move file of this connector ({FORMAT}).")
    return MoveFile(payload["manifest"], payload["users"], payload["rows"])


# --- import -----------------------------------------------------------------------------------------


def _remap(model, fields: dict, keymaps: dict, user_map: dict) -> dict:
    fields = dict(fields)
    user_model = get_user_model()
    for field in model._meta.concrete_fields:
        if not _is_link(field) or field.name not in fields:
            continue
        value = fields[field.name]
        if value is None:
            continue
        if field.related_model is user_model:
            fields[field.name] = user_map.get(value)
        elif field.related_model in keymaps:
            fields[field.name] = keymaps[field.related_model].get(value)
    if _is_history(model) and fields.get("id") is not None:
        fields["id"] = keymaps.get(model.instance_type, {}).get(fields["id"], fields["id"])
    return fields


def _users_in_target(users: Iterable[dict]) -> dict[int, int]:
    user_model = get_user_model()
    mapping = {}
    for user in users:
        values = {name: user[name] for name in USER_FIELDS if name != "username"}
        target, _ = user_model.objects.get_or_create(username=user["username"], defaults=values)
        mapping[user["pk"]] = target.pk
    return mapping


def _restore_automatic_times(model, records: list[dict], created: list) -> None:
    """bulk_create stamps auto_now/auto_now_add fields with the import time; put the originals back."""
    automatic = [
        f
        for f in model._meta.concrete_fields
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    if not automatic or not created:
        return
    for record, obj in zip(records, created, strict=True):
        for field in automatic:
            setattr(obj, field.attname, field.to_python(record["fields"][field.name]))
    model._base_manager.bulk_update(created, [f.name for f in automatic], batch_size=500)


def import_organization(move: MoveFile) -> Tenant:
    """Insert the organization's rows with new keys and verify them; all or nothing."""
    tenant_id = move.manifest["tenant_id"]
    if Tenant.objects.filter(microsoft_tenant_id=tenant_id).exists():
        raise ValidationError(
            f"This region already has an organization with tenant ID {tenant_id}; nothing was imported."
        )
    keymaps: dict = {}
    with transaction.atomic(), all_tenants():
        user_map = _users_in_target(move.users)
        for label, records in move.rows.items():
            model = apps.get_model(label)
            pk_name = model._meta.pk.name
            objects = []
            for record in records:
                fields = _remap(model, record["fields"], keymaps, user_map)
                built = next(
                    serializers.deserialize("python", [{"model": label, "pk": None, "fields": fields}])
                )
                objects.append(built.object)
            created = model._base_manager.bulk_create(objects)
            _restore_automatic_times(model, records, created)
            keymaps[model] = {
                record["pk"]: getattr(obj, pk_name) for record, obj in zip(records, created, strict=True)
            }
        tenant = Tenant.objects.get(microsoft_tenant_id=tenant_id)
        imported = digest(serialize_organization(tenant))
        if imported != move.manifest["digest"]:
            differing = sorted(k for k in imported if imported[k] != move.manifest["digest"].get(k))
            raise ValidationError(
                "The imported rows differ from the export (" + ", ".join(differing) + "); nothing was kept."
            )
    return tenant


# --- finish: delete at the source -----------------------------------------------------------------------


def delete_moved_organization(tenant: Tenant, move: MoveFile, *, target_region: str | None) -> dict[str, int]:
    """Delete the source rows, once the target hosts the organization and nothing changed since export."""
    if move.manifest["tenant_id"] != tenant.microsoft_tenant_id:
        raise ValidationError("This move file belongs to another organization.")
    if not target_region:
        raise ValidationError(
            "No other region answers that it hosts this organization yet: import the move file there first "
            "(and check REGION_LOOKUP_SECRET and CONNECTOR_REGIONS). Nothing was deleted."
        )
    _require_movable(tenant)
    if digest(serialize_organization(tenant)) != move.manifest["digest"]:
        raise ValidationError(
            "The organization's rows changed since the export: export and import again. Nothing was deleted."
        )
    deleted: dict[str, int] = {}
    user_ids = set()
    with transaction.atomic(), all_tenants():
        for model in reversed(owned_models()):
            queryset = _rows_of(model, tenant)
            for name in _user_fields(model):
                user_ids |= set(queryset.exclude(**{name: None}).values_list(name, flat=True))
            if model is not Tenant:
                deleted[model._meta.label] = queryset.delete()[1].get(model._meta.label, 0)
        deleted["tenants.Tenant"] = Tenant.objects.filter(pk=tenant.pk).delete()[1].get("tenants.Tenant", 0)
        orphans = get_user_model().objects.filter(
            pk__in=user_ids, is_staff=False, is_superuser=False, memberships__isnull=True
        )
        deleted["users without another organization"] = orphans.delete()[0]
    return deleted
