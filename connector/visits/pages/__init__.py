"""The pages around a visit: the patient's device test and lobby, the clinician's console, the demo meeting.

Nobody signs in to these pages. A signed token is the credential, and each
view finds the visit from it:

- patients and guests: a join token (`services.visits.join_token_make`) in
  the path, `/join/<token>/...`;
- clinicians: a console token (`console_url_for`) in `?t=`, for one visit;
- the demo meeting page: the demo backend's signed link (`sig`), for one
  meeting, role and participant.

Because a token, not a cookie, authorizes every request, the POST endpoints
are exempt from CSRF checks (a forged request would need the token itself),
which also lets them work inside EHR frames where third-party cookies are
blocked. Tokens are never logged: these views write no log lines with them,
and their 4xx answers are marked as logged so Django's request logger does not
print the path (which holds the token).
"""

from connector.visits.pages.console import (
    CONSOLE_SALT,
    console,
    console_admit,
    console_end,
    console_heartbeat,
    console_invite,
    console_invite_text,
    console_revoke,
    console_status,
    console_url_for,
)
from connector.visits.pages.demo_meeting import (
    demo_meeting,
    demo_meeting_event,
    demo_meeting_heartbeat,
    demo_meeting_status,
)
from connector.visits.pages.join import (
    device_test,
    join,
    join_device_test_results,
    lobby,
    lobby_heartbeat,
    lobby_status_json,
    ping,
)

__all__ = [
    "CONSOLE_SALT",
    "console",
    "console_admit",
    "console_end",
    "console_heartbeat",
    "console_invite",
    "console_invite_text",
    "console_revoke",
    "console_status",
    "console_url_for",
    "demo_meeting",
    "demo_meeting_event",
    "demo_meeting_heartbeat",
    "demo_meeting_status",
    "device_test",
    "join",
    "join_device_test_results",
    "lobby",
    "lobby_heartbeat",
    "lobby_status_json",
    "ping",
]
