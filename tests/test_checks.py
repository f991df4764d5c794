"""System checks report a half-configured provider before the first visit or text fails."""

from connector.checks import check_provider_backends


def test_a_half_configured_meeting_provider_is_reported(settings):
    settings.MEETING_BACKEND = "connector.meetings.jitsi.JitsiMeetingBackend"
    settings.JITSI_BASE_URL = ""
    messages = [e.msg for e in check_provider_backends(None)]
    assert any("JITSI_BASE_URL" in m for m in messages)


def test_an_unknown_backend_path_is_reported(settings):
    settings.SMS_BACKEND = "sms.backends.nowhere.Backend"
    errors = check_provider_backends(None)
    assert [e.id for e in errors] == ["connector.E004"]


def test_the_demo_backends_need_nothing(settings):
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    settings.SMS_BACKEND = "sms.backends.console.ConsoleSmsBackend"
    assert check_provider_backends(None) == []
