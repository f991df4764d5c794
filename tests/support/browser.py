"""Closing browser contexts without racing the database teardown.

Closing a page fires its `pagehide` handlers: the demo meeting and the lobby send
a last beacon ("left") that the live server handles in a thread of its own. If the
test's database teardown (a TRUNCATE of every table) starts while that request
still holds row locks, PostgreSQL resolves the deadlock by failing the teardown,
and the next test starts on a dirty database. So after closing, wait until the
live server has been idle for a moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from django.core.signals import request_finished, request_started

_lock = threading.Lock()
_in_flight = 0
_last_activity = time.monotonic()


def _started(**_kwargs) -> None:
    global _in_flight, _last_activity
    with _lock:
        _in_flight += 1
        _last_activity = time.monotonic()


def _finished(**_kwargs) -> None:
    global _in_flight, _last_activity
    with _lock:
        _in_flight = max(0, _in_flight - 1)
        _last_activity = time.monotonic()


request_started.connect(_started, dispatch_uid="tests-browser-requests-started")
request_finished.connect(_finished, dispatch_uid="tests-browser-requests-finished")


def wait_for_quiet_server(*, quiet_for: float = 0.3, timeout: float = 10.0) -> None:
    """Return once no request has been in flight for `quiet_for` seconds (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _lock:
            idle = _in_flight == 0 and time.monotonic() - _last_activity >= quiet_for
        if idle:
            return
        time.sleep(0.05)


def close_contexts(contexts: Iterable) -> None:
    """Close browser contexts, then let the requests their pages sent on the way out finish."""
    for context in contexts:
        context.close()
    wait_for_quiet_server()


def pages_from(browser, *, timeout_ms: int, **context_options) -> Iterator[Callable[[], object]]:
    """For a fixture: `yield from pages_from(browser, timeout_ms=...)` gives `make()`, a new page in
    its own browser context (its own cookies, as another person's browser), all closed at teardown."""
    contexts = []

    def make():
        context = browser.new_context(**context_options)
        context.set_default_timeout(timeout_ms)
        contexts.append(context)
        return context.new_page()

    yield make
    close_contexts(contexts)
