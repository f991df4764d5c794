"""A WSGI handler with a middleware list of its own, and a router that picks a handler by path.

Used by connector/wsgi.py to serve the scheduling feed (machine-to-machine POSTs
with no cookie and no user) without the browser middleware: sessions, CSRF,
sign-in, messages, tenant scope from the session, audit-history user, rate-limit
pages. For the feed those only cost time: about 0.3 ms of CPU per message, 8 %
of its throughput on two cores (bench/sms_ingest_bench.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.utils.module_loading import import_string

# Hooks that only Django's own loader wires up; a middleware needing them belongs in the full stack.
_UNSUPPORTED_HOOKS = ("process_view", "process_exception", "process_template_response")


class MiddlewareListHandler(WSGIHandler):
    """A WSGIHandler whose middleware is `middleware` (dotted paths), not settings.MIDDLEWARE.

    Only middleware that wraps the request and response is supported (as
    RequestIdMiddleware and SecurityMiddleware do); one with view, exception or
    template-response hooks is refused at start-up rather than silently skipped.
    """

    def __init__(self, middleware: Iterable[str]) -> None:
        self._middleware_paths = tuple(middleware)
        super().__init__()  # loads the middleware, through load_middleware below

    def load_middleware(self, is_async: bool = False) -> None:
        handler = convert_exception_to_response(self._get_response)
        for path in reversed(self._middleware_paths):
            middleware = import_string(path)
            hooks = [hook for hook in _UNSUPPORTED_HOOKS if hasattr(middleware, hook)]
            if hooks:
                raise ImproperlyConfigured(f"{path} needs {', '.join(hooks)}: keep it in settings.MIDDLEWARE")
            handler = convert_exception_to_response(middleware(handler))
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = handler


class PathRouter:
    """A WSGI application that hands requests under a path prefix to their own handler."""

    def __init__(self, default: Callable, routes: dict[str, Callable]) -> None:
        self.default = default
        self.routes = tuple(routes.items())

    def __call__(self, environ: dict, start_response: Callable):
        path = environ.get("PATH_INFO", "")
        for prefix, handler in self.routes:
            if path.startswith(prefix):
                return handler(environ, start_response)
        return self.default(environ, start_response)
