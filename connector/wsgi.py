"""The WSGI application: what gunicorn (`connector.wsgi:application`) and runserver serve.

The scheduling feed's POSTs (`/sms/ingest/...`) go to a handler with only the
middleware they need: request ids in the logs, and the HTTPS redirect and
security headers. Everything else goes through the full stack in
settings.MIDDLEWARE. See connector/handlers.py for why.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connector.settings")
_full_stack = get_wsgi_application()  # sets Django up, so the imports below can follow

from connector.handlers import MiddlewareListHandler, PathRouter  # noqa: E402

FEED_PATH_PREFIX = "/sms/ingest/"
FEED_MIDDLEWARE = (
    "connector.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Multi-region: a message for an organization hosted in another region gets 421.
    "tenants.region_routing.RegionRoutingMiddleware",
)

application = PathRouter(
    default=_full_stack, routes={FEED_PATH_PREFIX: MiddlewareListHandler(FEED_MIDDLEWARE)}
)
