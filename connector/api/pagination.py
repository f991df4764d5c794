import json
from base64 import urlsafe_b64decode, urlsafe_b64encode

from django.db.models import Q
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param


class StandardPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class KeysetPagination(BasePagination):
    """Cursor pages for large ranges: stable under inserts, no count query, no gaps or repeats.

    The cursor holds the last row's sort value and primary key, and the next page starts
    strictly after that pair. DRF's CursorPagination keys on the sort value alone and steps
    over equal values with an offset, which skipped rows when many visits share a start
    time; the primary key as tie-breaker makes every position unique. The view sets
    `ordering` (a field or annotation, `-` for descending) before paginating.
    """

    ordering = "time"
    page_size = 50
    max_page_size = 500

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        size = request.query_params.get("page_size", "")
        if size and (not size.isdigit() or not 1 <= int(size) <= self.max_page_size):
            raise ValidationError({"page_size": [f"Send a whole number from 1 to {self.max_page_size}."]})
        limit = int(size) if size else self.page_size
        field, descending = self.ordering.lstrip("-"), self.ordering.startswith("-")
        after = self._decode(request.query_params.get("cursor"))
        if after is not None:
            value = parse_datetime(after["v"]) if after["v"] else None
            if value is None:
                raise ValidationError({"cursor": [self.BAD_CURSOR]})
            beyond = "lt" if descending else "gt"
            # (field, pk) beyond (value, pk), written so an index on (field, pk) bounds the scan:
            # field at or beyond value, and strictly beyond on one of the two.
            queryset = queryset.filter(**{f"{field}__{beyond}e": value}).filter(
                Q(**{f"{field}__{beyond}": value}) | Q(**{f"pk__{beyond}": after["pk"]})
            )
        order = [f"-{field}", "-pk"] if descending else [field, "pk"]
        rows = list(queryset.order_by(*order)[: limit + 1])
        self.next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            self.next_cursor = self._encode({"v": getattr(last, field).isoformat(), "pk": last.pk})
        return rows

    BAD_CURSOR = "This cursor is not valid; follow the `next` link as given."

    def _encode(self, position: dict) -> str:
        return urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()

    def _decode(self, raw: str | None) -> dict | None:
        if raw is None:
            return None
        try:
            position = json.loads(urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)))
        except (ValueError, UnicodeError):
            raise ValidationError({"cursor": [self.BAD_CURSOR]}) from None
        if (
            not isinstance(position, dict)
            or not isinstance(position.get("v"), str)
            or not isinstance(position.get("pk"), int)
        ):
            raise ValidationError({"cursor": [self.BAD_CURSOR]})
        return position

    def get_next_link(self) -> str | None:
        if self.next_cursor is None:
            return None
        return replace_query_param(self.request.build_absolute_uri(), "cursor", self.next_cursor)

    def get_paginated_response(self, data):
        return Response({"next": self.get_next_link(), "results": data})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }
