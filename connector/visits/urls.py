from django.urls import path

from connector.visits import launch, pages, webhooks

app_name = "visits"

urlpatterns = [
    path("launch/provider", launch.provider_launch, name="provider-launch"),
    path("launch/patient", launch.patient_launch, name="patient-launch"),
    path("launch/callback", launch.callback, name="launch-callback"),
    path("launch/link/<str:token>/", launch.clinician_link, name="clinician-link"),
    # Patients and guests (connector/visits/pages.py): device test, then the lobby.
    path("join/<str:token>/", pages.join, name="join"),
    path("join/<str:token>/device-test/", pages.join_device_test_results, name="join-device-test"),
    path("join/<str:token>/lobby/", pages.lobby, name="lobby"),
    path("join/<str:token>/lobby/status.json", pages.lobby_status_json, name="lobby-status"),
    path("join/<str:token>/lobby/heartbeat/", pages.lobby_heartbeat, name="lobby-heartbeat"),
    path("device-test", pages.device_test, name="device-test"),
    path("visit/ping", pages.ping, name="ping"),
    # The demo meeting page (connector.meetings.demo).
    path("visit/demo-meeting/<str:meeting_id>/", pages.demo_meeting, name="demo-meeting"),
    path(
        "visit/demo-meeting/<str:meeting_id>/status.json",
        pages.demo_meeting_status,
        name="demo-meeting-status",
    ),
    path("visit/demo-meeting/<str:meeting_id>/event/", pages.demo_meeting_event, name="demo-meeting-event"),
    path(
        "visit/demo-meeting/<str:meeting_id>/heartbeat/",
        pages.demo_meeting_heartbeat,
        name="demo-meeting-heartbeat",
    ),
    # The clinician's console for one visit (?t=<console token>).
    path("visit/<str:public_id>/console/", pages.console, name="console"),
    path("visit/<str:public_id>/console/status.json", pages.console_status, name="console-status"),
    path("visit/<str:public_id>/console/admit/", pages.console_admit, name="console-admit"),
    path("visit/<str:public_id>/console/end/", pages.console_end, name="console-end"),
    path("visit/<str:public_id>/console/heartbeat/", pages.console_heartbeat, name="console-heartbeat"),
    path("visit/<str:public_id>/console/invite/", pages.console_invite, name="console-invite"),
    path("visit/<str:public_id>/console/revoke/", pages.console_revoke, name="console-revoke"),
    path("visit/<str:public_id>/console/invite/text/", pages.console_invite_text, name="console-invite-text"),
    path("webhooks/meetings/<str:backend>/", webhooks.meeting_webhook, name="meeting-webhook"),
    # Jitsi's event_sync module appends its own path (events/occupant/joined, ...).
    path(
        "webhooks/meetings/<str:backend>/<path:rest>", webhooks.meeting_webhook, name="meeting-webhook-path"
    ),
]
