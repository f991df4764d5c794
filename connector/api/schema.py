"""The OpenAPI schema view; its generator lifts the tenant scope (schema_generator.py)."""

from drf_spectacular.views import SpectacularAPIView

from connector.api.schema_generator import ScopeLiftedSchemaGenerator


class SchemaView(SpectacularAPIView):
    generator_class = ScopeLiftedSchemaGenerator
