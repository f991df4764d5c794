"""Meeting backends for video visits, chosen by dotted path like Django's email backends.

    MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"      # the demo page
    MEETING_BACKEND = "connector.meetings.locmem.LocmemMeetingBackend"  # tests
    MEETING_BACKEND = "connector.meetings.jitsi.JitsiMeetingBackend"    # self-hosted Jitsi Meet
    MEETING_BACKEND = "connector.meetings.teams.TeamsGraphMeetingBackend"  # Microsoft Teams

The interface is in `connector.meetings.base`; docs/meetings.md has the
settings, permissions and webhook shapes of each backend.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from connector.meetings.base import (
    BaseMeetingBackend,
    Meeting,
    MeetingError,
    MeetingEvent,
    MeetingRequest,
    Participant,
    WebhookRejected,
    WebhookResult,
)

DEFAULT_MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"

__all__ = [
    "DEFAULT_MEETING_BACKEND",
    "BaseMeetingBackend",
    "Meeting",
    "MeetingError",
    "MeetingEvent",
    "MeetingRequest",
    "Participant",
    "WebhookRejected",
    "WebhookResult",
    "get_meeting_backend",
]


def get_meeting_backend(path: str | None = None) -> BaseMeetingBackend:
    """An instance of the meeting backend at `path`, or of `settings.MEETING_BACKEND`.

    Backends are cheap to make and keep no state between calls (the Teams
    backend's tokens live in Django's cache), so callers make one per use.
    """
    path = path or getattr(settings, "MEETING_BACKEND", DEFAULT_MEETING_BACKEND)
    try:
        backend_class = import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(f"MEETING_BACKEND {path!r} cannot be imported: {error}") from error
    if not (isinstance(backend_class, type) and issubclass(backend_class, BaseMeetingBackend)):
        raise ImproperlyConfigured(f"MEETING_BACKEND {path!r} is not a BaseMeetingBackend subclass.")
    return backend_class()
