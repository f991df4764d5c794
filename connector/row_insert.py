"""INSERT of model instances without the ORM's per-call machinery, for hot paths.

`Model.save()` and `QuerySet.bulk_create()` build a query object, compile it to
SQL and send signals on every call. For the scheduling feed (three inserts per
message) that machinery measured about 2 ms of CPU per message on a 2-core
machine: more than the SQL itself, and most of what kept the feed under its
throughput target (bench/sms_ingest_bench.py).

`rows_insert` writes exactly the values the ORM would (each field's `pre_save`
and `get_db_prep_save`: auto_now, defaults, field encryption, the backend's
date format) with an INSERT statement built once per model and row count, using
the backend's own operations (quoting, ON CONFLICT, RETURNING), so it works on
PostgreSQL and SQLite alike. What it leaves out, on purpose: pre_save and
post_save signals (it refuses a model that has receivers, such as one with
audit history), multi-table inheritance, and expressions as field values.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from django.db import connections, models
from django.db.models.constants import OnConflict
from django.db.models.signals import post_save, pre_save


def rows_insert(
    instances: Sequence[models.Model], *, ignore_conflicts: bool = False, using: str = "default"
) -> None:
    """INSERT new `instances` (all of one model) in one statement.

    Without `ignore_conflicts` a unique violation raises IntegrityError, as
    `save()` would, and each instance gets its primary key. With it, rows that
    conflict are skipped and, as with `bulk_create(ignore_conflicts=True)`, no
    primary keys are set.
    """
    if not instances:
        return
    model = type(instances[0])
    if any(type(instance) is not model for instance in instances):
        raise TypeError("rows_insert takes instances of one model at a time")
    if pre_save.has_listeners(model) or post_save.has_listeners(model):
        raise TypeError(
            f"{model.__name__} has pre_save/post_save receivers, which rows_insert would skip: use save()"
        )
    connection = connections[using]
    fields, sql, returns_pk = _statement(model, len(instances), ignore_conflicts, using)
    params = []
    for instance in instances:
        # As save() does: a related object assigned before it had a key gives its key now.
        instance._prepare_related_fields_for_save(operation_name="rows_insert")
        for field in fields:
            params.append(field.get_db_prep_save(field.pre_save(instance, True), connection=connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if returns_pk:
            pks = [row[0] for row in cursor.fetchall()]
        elif not ignore_conflicts:
            pks = [connection.ops.last_insert_id(cursor, model._meta.db_table, model._meta.pk.column)]
        else:
            pks = []
    for instance, pk in zip(instances, pks, strict=False):
        instance.pk = pk
    for instance in instances:
        instance._state.adding = False
        instance._state.db = using


@lru_cache(maxsize=64)
def _statement(
    model: type[models.Model], rows: int, ignore_conflicts: bool, using: str
) -> tuple[list[models.Field], str, bool]:
    """The fields written, the SQL, and whether it returns the primary keys (built once per shape)."""
    meta = model._meta
    if meta.parents:
        raise TypeError(f"{model.__name__} inherits from another concrete model: use save()")
    fields = [field for field in meta.local_concrete_fields if field is not meta.auto_field]
    for field in fields:
        if getattr(field, "generated", False) or field.has_db_default():
            raise TypeError(f"{model.__name__}.{field.name} is computed by the database: use save()")
    connection = connections[using]
    quote = connection.ops.quote_name
    on_conflict = OnConflict.IGNORE if ignore_conflicts else None
    columns = ", ".join(quote(field.column) for field in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"{connection.ops.insert_statement(on_conflict=on_conflict)} {quote(meta.db_table)} ({columns}) "
        f"VALUES {', '.join([row] * rows)}"
    )
    if ignore_conflicts:
        sql += " " + connection.ops.on_conflict_suffix_sql(fields, on_conflict, None, None)
    returns_pk = (
        not ignore_conflicts
        and meta.auto_field is not None
        and connection.features.can_return_rows_from_bulk_insert
    )
    if returns_pk:
        sql += f" RETURNING {quote(meta.pk.column)}"
    elif not ignore_conflicts and rows > 1:
        raise TypeError(f"this database cannot return the keys of several {model.__name__} rows")
    return fields, sql, returns_pk
