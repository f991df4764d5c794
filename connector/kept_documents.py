"""Public documents an EHR serves, kept in this process for a minute on top of the shared cache.

The EHR's SMART configuration and its signing keys (JWKS) are kept in Django's shared
cache for an hour (`connector/services/launch.py`, `connector/smart.py`). Reading that
cache is a database query (or a Redis round trip) each time: a launch read it three
times. Each process also keeps its own copy for `KEPT_SECONDS`, so a change made in
the shared cache (an endpoint validated again) reaches every process within a minute,
and a rotated signing key is read at once: an id_token signed with an unknown key id
asks for a fresh read, which replaces this copy too. Only public documents are kept
here, never tokens or anything about a patient.
"""

from __future__ import annotations

import threading

from cachetools import TTLCache

KEPT_SECONDS = 60
MAX_KEPT = 1_000  # documents: a deployment with more EHRs reads the rest from the shared cache

_lock = threading.Lock()
_kept: TTLCache = TTLCache(maxsize=MAX_KEPT, ttl=KEPT_SECONDS)


def kept(key: str):
    """The document kept under `key` in this process, or None."""
    with _lock:
        return _kept.get(key)


def keep(key: str, value) -> None:
    with _lock:
        _kept[key] = value


def forget_all() -> None:
    """Drop every kept document (tests; nothing else needs it)."""
    with _lock:
        _kept.clear()
