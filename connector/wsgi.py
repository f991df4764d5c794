"""The WSGI application: what gunicorn (`connector.wsgi:application`) and runserver serve.

Every request, the scheduling feed's included, goes through settings.MIDDLEWARE:
the feed's view is CSRF-exempt and reads no session, so the browser middleware
costs it little (bench/sms_ingest_bench.py measures it).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connector.settings")
application = get_wsgi_application()
