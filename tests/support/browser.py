"""Closing browser contexts without racing the database teardown.

Closing a page fires its `pagehide` handlers: the demo meeting and the lobby send
a last beacon ("left") that the live server handles in a thread of its own. If the
test's database teardown (a TRUNCATE of every table) starts while that request
still holds row locks, PostgreSQL resolves the deadlock by failing the teardown,
and the next test starts on a dirty database. So after closing, wait until the
live server has been idle for a moment.

Every context opened here also watches for Content-Security-Policy violations (an
inline script, style or event handler the policy refused, a resource from another
origin): closing the contexts fails the test when any page reported one.
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


# Runs in every page before its own scripts: the browser fires `securitypolicyviolation`
# for each thing the policy refuses; report it on the console, where the context listens.
_REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", function (event) {
  console.error("CSP violation: " + event.violatedDirective + " blocked " + (event.blockedURI || "inline")
    + " at " + event.sourceFile + ":" + event.lineNumber);
}, true);
"""


def open_context(browser, **context_options):
    """A new browser context whose pages' CSP violations are collected in `context.csp_violations`."""
    context = browser.new_context(**context_options)
    violations: list[str] = []

    def on_console(message) -> None:
        text = message.text
        # Chromium's own console line ("Refused to ... because it violates the following Content
        # Security Policy directive") and the event reported by the init script above.
        if "Content Security Policy" in text or text.startswith("CSP violation:"):
            violations.append(f"{message.page.url if message.page else '?'}: {text}")

    context.on("console", on_console)
    context.add_init_script(_REPORT_CSP_VIOLATIONS)
    context.csp_violations = violations
    return context


def close_contexts(contexts: Iterable) -> None:
    """Close browser contexts, then let the requests their pages sent on the way out finish;
    fail if a page of theirs reported a Content-Security-Policy violation."""
    violations = []
    for context in contexts:
        violations.extend(getattr(context, "csp_violations", []))
        context.close()
    wait_for_quiet_server()
    assert not violations, "Content-Security-Policy violations:\n" + "\n".join(violations)


def pages_from(browser, *, timeout_ms: int, **context_options) -> Iterator[Callable[[], object]]:
    """For a fixture: `yield from pages_from(browser, timeout_ms=...)` gives `make()`, a new page in
    its own browser context (its own cookies, as another person's browser), all closed at teardown."""
    contexts = []

    def make():
        context = open_context(browser, **context_options)
        context.set_default_timeout(timeout_ms)
        contexts.append(context)
        return context.new_page()

    yield make
    close_contexts(contexts)
