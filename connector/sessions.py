"""Sessions end after a spell of idleness and after a fixed total lifetime."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url

STARTED_KEY = "_session_started_at"
SEEN_KEY = "_session_last_seen_at"
# Writing the session on every request would cost a database write per hit;
# refreshing the idle clock once a minute is precise enough.
_SEEN_RESOLUTION_SECONDS = 60


def session_is_expired(session, now: float) -> bool:
    started = session.get(STARTED_KEY)
    if started is None:
        return False
    seen = session.get(SEEN_KEY, started)
    return (
        now - started > settings.SESSION_ABSOLUTE_TIMEOUT.total_seconds()
        or now - seen > settings.SESSION_IDLE_TIMEOUT.total_seconds()
    )


class SessionTimeoutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = request.session
        if session_is_expired(session, time.time()):
            # logout() flushes the session and rotates its key.
            logout(request)
            request.session_expired = True
        response = self.get_response(request)
        if getattr(request, "session_expired", False) and response.status_code == 302:
            # Tell the sign-in page why it is shown (it says "Your session ended").
            location = response.get("Location", "")
            if location.startswith(resolve_url(settings.LOGIN_URL)):
                response["Location"] = location + ("&" if "?" in location else "?") + "expired=1"
        # Stamp after the view: a sign-in creates the session during the view.
        if session.session_key or session.modified:
            now = time.time()
            if STARTED_KEY not in session:
                session[STARTED_KEY] = now
                session[SEEN_KEY] = now
            elif now - session.get(SEEN_KEY, 0) > _SEEN_RESOLUTION_SECONDS:
                session[SEEN_KEY] = now
        return response
