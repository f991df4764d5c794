from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class StandardPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request):
        """DRF falls back to the default page size for a `page_size` it cannot read; say so instead."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw not in (None, "") and not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise ValidationError(
                {
                    self.page_size_query_param: [
                        f"page_size must be a whole number from 1 to {self.max_page_size} "
                        f"(larger values are cut to {self.max_page_size}); leave it out for {self.page_size}."
                    ]
                }
            )
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] in (self.page_size_query_param, self.page_query_param):
                parameter["schema"] = {"type": "integer", "minimum": 1}
        return parameters
