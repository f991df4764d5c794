"""Serializer fields whose OpenAPI schema says exactly what the API sends."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@extend_schema_field(
    {
        "type": "string",
        "description": "An absolute URL, or an empty string where there is none.",
        "anyOf": [{"format": "uri", "minLength": 1}, {"maxLength": 0}],
    }
)
class UrlOrEmptyField(serializers.CharField):
    """A model URLField with blank=True: the API sends "" when it is not set, which is no `uri`."""
