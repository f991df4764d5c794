from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination


class StandardPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class VisitCursorPagination(CursorPagination):
    """Cursor pages for large ranges: stable under inserts, no count query. The view sets `ordering`."""

    ordering = "time"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError(
                {"cursor": ["This cursor is not valid; follow the `next` or `previous` link as given."]}
            ) from None
