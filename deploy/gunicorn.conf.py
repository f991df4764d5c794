"""gunicorn settings for the connector's web processes: `gunicorn -c deploy/gunicorn.conf.py`.

Every value can be changed from the environment (the names below). The process
layout this belongs to is in docs/architecture.md ("Processes"); Procfile lists
the commands.
"""

from __future__ import annotations

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


wsgi_app = "connector.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")

# Processes x threads. Threads, because a launch waits on the EHR and on Microsoft Graph
# while holding little CPU; several processes, because the scheduling feed is CPU-bound
# Python. Each thread holds its own database connection: size PostgreSQL's
# max_connections for (web processes x threads) + workers + MLLP connections.
workers = _int("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 8))
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 4)

# Longer than the slowest request the connector makes on a user's behalf (the EHR calls
# of a launch, EHR_HTTP_TOTAL_TIMEOUT = 15 s, each): a worker past it is killed and restarted.
timeout = _int("GUNICORN_TIMEOUT", 60)
# On SIGTERM (a deploy) requests in flight get this long to finish.
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = 5

# A process is replaced after this many requests (plus jitter, so they do not all restart
# together): whatever it kept in memory (the feed setup, bounded anyway) starts afresh.
max_requests = _int("GUNICORN_MAX_REQUESTS", 5000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 500)

# Each process sets Django up after the fork: no database connection or Redis client is
# shared between processes.
preload_app = False

# No control socket (gunicorn 24+): processes are managed with signals, and several
# instances on one host would share its default path.
control_socket_disable = True

# Heartbeat files in memory, not on a disk that may stall.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

# No access log: URLs carry join and launch tokens. Errors are logged by Django, with
# the request id and redacted values (connector/log_redaction.py).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Behind a TLS proxy, the addresses allowed to set X-Forwarded-* (settings.BEHIND_TLS_PROXY).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# The scheduling feed's body limit is enforced by the application (HL7_MAX_BODY_BYTES);
# these bound the request line and headers before Django sees them.
limit_request_line = 8190
limit_request_fields = 100
