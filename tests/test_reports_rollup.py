"""Daily roll-ups: local days per department time zone, hand-computed figures, reruns, catch-up,
late events, the allotment and its warnings.

Visits are created directly with their derived fields set (as visit_recompute
would leave them); time is frozen with time_machine so `created_at` and
`received_at` fall where a real night would put them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils.crypto import get_random_string

from connector.models import (
    EndpointStatus,
    EventKind,
    EventSource,
    FhirEndpoint,
    ParticipantRole,
    Visit,
    VisitEvent,
    VisitState,
)
from reports.models import AllotmentWarning, DailyRollup, ReportBuild
from reports.services import allotment_warnings_send, rollup_build, rollups_build_due
from reports.stats import histogram_percentile
from sms.models import Appointment, MessageKind, MessageState, OutboundMessage, PhoneNumber
from tenants.scoping import all_tenants, tenant_scope

NY = "America/New_York"
CPH = "Europe/Copenhagen"


# --- helpers shared with tests/test_reports_views.py -------------------------------------


def at(zone: str, y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=ZoneInfo(zone))


def make_endpoint(
    tenant, *, zone: str = NY, environment: str = "production", label: str = ""
) -> FhirEndpoint:
    with tenant_scope(tenant):
        return FhirEndpoint.objects.create(
            tenant=tenant,
            base_url=f"https://fhir-{get_random_string(6).lower()}.example.org/api/FHIR/R4",
            environment=environment,
            label=label or f"{zone} {environment}",
            time_zone=zone,
            status=EndpointStatus.VALIDATED,
        )


def make_visit(
    tenant,
    endpoint: FhirEndpoint,
    *,
    start: datetime,
    minutes: float | None = 20,
    state: str = VisitState.COMPLETED,
    wait: int | None = None,
    peak: int = 2,
    department: str = "CARD",
    appointment: str = "",
    clinician=None,
    clinician_ehr_id: str = "Practitioner/dr-1",
) -> Visit:
    started = state in (VisitState.COMPLETED, VisitState.IN_PROGRESS)
    with tenant_scope(tenant):
        return Visit.objects.create(
            tenant=tenant,
            public_id=get_random_string(24),
            endpoint=endpoint,
            appointment_id=appointment or f"APPT-{get_random_string(8)}",
            department_id=department,
            scheduled_start=start,
            scheduled_end=start + timedelta(minutes=30),
            state=state,
            started_at=start if started else None,
            ended_at=start + timedelta(minutes=minutes)
            if state == VisitState.COMPLETED and minutes
            else None,
            lobby_wait_seconds=wait,
            peak_attendees=peak if started else 0,
            primary_clinician=clinician,
            primary_clinician_ehr_id=clinician_ehr_id,
        )


def make_text(
    tenant,
    *,
    when: datetime,
    state: str = MessageState.DELIVERED,
    visit: Visit | None = None,
    kind: str = MessageKind.REMINDER,
    last_four: str = "1234",
    error: str = "",
    provider: str = "locmem",
) -> OutboundMessage:
    with tenant_scope(tenant):
        number = PhoneNumber.objects.filter(tenant=tenant).first() or PhoneNumber.objects.create(
            tenant=tenant, number=f"+1202555{100 + tenant.pk:04d}", state="active", provider="locmem"
        )
        appointment = None
        if visit is not None:
            appointment, _ = Appointment.objects.get_or_create(
                tenant=tenant,
                sending_facility="FAC",
                external_id=visit.appointment_id,
                defaults={
                    "endpoint": visit.endpoint,
                    "start": visit.scheduled_start,
                    "end": visit.scheduled_end,
                    "department": visit.department_id,
                    "state_as_of": visit.scheduled_start - timedelta(days=5),
                },
            )
        sent = state in (MessageState.SENT, MessageState.DELIVERED)
        return OutboundMessage.objects.create(
            tenant=tenant,
            appointment=appointment,
            phone_number=number,
            kind=kind,
            to_last_four=last_four,
            to_hash=get_random_string(20),
            send_at=when,
            state=state,
            provider=provider,
            error=error,
            dedupe_key=get_random_string(20),
            sent_at=when if sent else None,
        )


def stored(tenant) -> dict[tuple[date, str, str], dict]:
    with tenant_scope(tenant):
        return {
            (row.pop("day"), row.pop("department"), row.pop("environment")): row
            for row in DailyRollup.objects.order_by("day").values(
                "day",
                "department",
                "environment",
                "visits",
                "completed",
                "no_shows",
                "total_seconds",
                "attendees_sum",
                "lobby_wait_sum_seconds",
                "lobby_wait_count",
                "lobby_wait_max_seconds",
                "lobby_wait_p90_seconds",
                "lw_0s_30s",
                "lw_30s_1m",
                "lw_3m_4m",
                "lw_10m_15m",
                "sms_sent",
                "sms_delivered",
                "sms_failed",
            )
        }


def build(tenant, first: date, last: date) -> None:
    with time_machine.travel(datetime(2026, 6, 1, 12, tzinfo=UTC), tick=False):
        rollup_build(tenant=tenant, first=first, last=last)


# --- the hand-computed month ---------------------------------------------------------------


@pytest.fixture
def march(org_a):
    """Visits and texts around 2 March 2026 in New York (production) and Copenhagen (test)."""
    ny = make_endpoint(org_a, zone=NY, environment="production")
    cph = make_endpoint(org_a, zone=CPH, environment="test")
    v1 = make_visit(org_a, ny, start=at(NY, 2026, 3, 2, 9), minutes=20, wait=45, peak=2)
    make_visit(
        org_a, ny, start=at(NY, 2026, 3, 2, 23, 30), minutes=50, wait=200, peak=3
    )  # ends after midnight
    make_visit(org_a, ny, start=at(NY, 2026, 3, 2, 14), state=VisitState.NO_SHOW)
    make_visit(org_a, ny, start=at(NY, 2026, 3, 2, 10), minutes=10, wait=700, department="PEDS")
    make_visit(org_a, ny, start=at(NY, 2026, 3, 2, 11), state=VisitState.SCHEDULED)  # never reported
    make_visit(
        org_a, cph, start=at(CPH, 2026, 3, 3, 0, 30), minutes=15, wait=20, department="ORTO"
    )  # 23:30 UTC
    make_visit(org_a, cph, start=at(CPH, 2026, 3, 2, 23, 50), minutes=5, department="ORTO")
    make_text(org_a, visit=v1, when=at(NY, 2026, 3, 1, 10), kind=MessageKind.CONFIRMATION)
    make_text(org_a, visit=v1, when=at(NY, 2026, 3, 2, 8))
    make_text(org_a, visit=v1, when=at(NY, 2026, 3, 2, 8, 30), state=MessageState.FAILED, error="30003")
    make_text(org_a, visit=v1, when=at(NY, 2026, 3, 2, 8, 45), state=MessageState.SCHEDULED)  # not counted
    make_text(
        org_a, when=datetime(2026, 3, 2, 12, tzinfo=UTC), kind=MessageKind.HELP, state=MessageState.SENT
    )
    return {"ny": ny, "cph": cph, "v1": v1}


EXPECTED = {
    (date(2026, 3, 1), "CARD", "production"): {
        "visits": 0,
        "sms_sent": 1,
        "sms_delivered": 1,
        "sms_failed": 0,
    },
    (date(2026, 3, 2), "CARD", "production"): {
        "visits": 3,
        "completed": 2,
        "no_shows": 1,
        "total_seconds": 70 * 60,
        "attendees_sum": 5,
        "lobby_wait_sum_seconds": 245,
        "lobby_wait_count": 2,
        "lobby_wait_max_seconds": 200,
        "lw_30s_1m": 1,
        "lw_3m_4m": 1,
        # rank 0.9 * 2 = 1.8 falls in 180-240 s, which ends at the longest wait (200): 180 + 20 * 0.8
        "lobby_wait_p90_seconds": 196,
        "sms_sent": 1,
        "sms_delivered": 1,
        "sms_failed": 1,
    },
    (date(2026, 3, 2), "PEDS", "production"): {
        "visits": 1,
        "completed": 1,
        "total_seconds": 600,
        "lw_10m_15m": 1,
        "lobby_wait_p90_seconds": 690,  # 600 + (700 - 600) * 0.9
    },
    (date(2026, 3, 2), "ORTO", "test"): {
        "visits": 1,
        "completed": 1,
        "total_seconds": 300,
        "lobby_wait_count": 0,
    },
    (date(2026, 3, 3), "ORTO", "test"): {
        "visits": 1,
        "total_seconds": 900,
        "lw_0s_30s": 1,
        "lobby_wait_p90_seconds": 18,
    },
    (date(2026, 3, 2), "", ""): {"visits": 0, "sms_sent": 1, "sms_delivered": 0},
}


def test_roll_ups_match_the_hand_computed_figures(org_a, march):
    build(org_a, date(2026, 3, 1), date(2026, 3, 3))

    rows = stored(org_a)
    assert set(rows) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        for field, value in expected.items():
            assert rows[key][field] == value, (key, field)


def test_a_visit_belongs_to_the_local_day_of_its_start_even_when_it_ends_after_midnight(org_a, march):
    build(org_a, date(2026, 3, 3), date(2026, 3, 3))

    rows = stored(org_a)
    # The 23:30 New York visit (04:30 UTC on the 3rd) is not on the 3rd; the 00:30 Copenhagen one is.
    assert (date(2026, 3, 3), "CARD", "production") not in rows
    assert rows[(date(2026, 3, 3), "ORTO", "test")]["visits"] == 1


def test_a_rerun_gives_the_same_rows_and_removes_days_that_lost_their_data(org_a, march):
    build(org_a, date(2026, 3, 1), date(2026, 3, 3))
    first = stored(org_a)
    build(org_a, date(2026, 3, 1), date(2026, 3, 3))
    assert stored(org_a) == first

    with tenant_scope(org_a):
        Visit.objects.filter(department_id="PEDS").delete()
    build(org_a, date(2026, 3, 2), date(2026, 3, 2))
    rows = stored(org_a)
    assert (date(2026, 3, 2), "PEDS", "production") not in rows
    assert rows[(date(2026, 3, 1), "CARD", "production")] == first[(date(2026, 3, 1), "CARD", "production")]


def test_rebuilding_one_day_leaves_the_other_days_alone(org_a, march):
    build(org_a, date(2026, 3, 1), date(2026, 3, 3))
    with tenant_scope(org_a):
        before = DailyRollup.objects.get(day=date(2026, 3, 3), department="ORTO").built_at
    with time_machine.travel(datetime(2026, 6, 2, tzinfo=UTC), tick=False):
        rollup_build(tenant=org_a, first=date(2026, 3, 2), last=date(2026, 3, 2))
    with tenant_scope(org_a):
        assert DailyRollup.objects.get(day=date(2026, 3, 3), department="ORTO").built_at == before


@pytest.mark.parametrize(
    ("start", "minutes", "day", "seconds"),
    [
        # Spring forward, Sunday 8 March 2026: 02:00 EST becomes 03:00 EDT (a 23-hour day).
        (datetime(2026, 3, 8, 5, 30, tzinfo=UTC), 30, date(2026, 3, 8), 1800),  # 00:30 EST
        (datetime(2026, 3, 9, 3, 30, tzinfo=UTC), 30, date(2026, 3, 8), 1800),  # 23:30 EDT
        (datetime(2026, 3, 8, 4, 30, tzinfo=UTC), 30, date(2026, 3, 7), 1800),  # 23:30 EST the day before
        # Fall back, Sunday 1 November 2026: 02:00 EDT becomes 01:00 EST (a 25-hour day).
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), 40, date(2026, 11, 1), 2400),  # 01:30 EDT, ends 01:10 EST
        (datetime(2026, 11, 2, 4, 30, tzinfo=UTC), 20, date(2026, 11, 1), 1200),  # 23:30 EST
        (datetime(2026, 11, 1, 3, 59, tzinfo=UTC), 20, date(2026, 10, 31), 1200),  # 23:59 EDT the day before
    ],
)
def test_daylight_saving_days_count_by_their_local_dates(org_a, start, minutes, day, seconds):
    ny = make_endpoint(org_a)
    make_visit(org_a, ny, start=start, minutes=minutes)
    build(org_a, day - timedelta(days=1), day + timedelta(days=1))

    rows = stored(org_a)
    assert list(rows) == [(day, "CARD", "production")]
    assert rows[(day, "CARD", "production")]["total_seconds"] == seconds


def test_no_shows_count_on_their_scheduled_day_with_no_duration_or_wait(org_a):
    ny = make_endpoint(org_a)
    make_visit(org_a, ny, start=at(NY, 2026, 4, 1, 23, 45), state=VisitState.NO_SHOW)
    make_visit(
        org_a, ny, start=at(NY, 2026, 4, 1, 9), state=VisitState.IN_PROGRESS
    )  # not finished: not counted
    build(org_a, date(2026, 4, 1), date(2026, 4, 2))

    row = stored(org_a)[(date(2026, 4, 1), "CARD", "production")]
    assert (row["visits"], row["completed"], row["no_shows"], row["total_seconds"]) == (1, 0, 1, 0)
    assert row["lobby_wait_count"] == 0 and row["lobby_wait_p90_seconds"] is None


def test_each_organization_gets_only_its_own_visits(org_a, org_b):
    make_visit(org_a, make_endpoint(org_a), start=at(NY, 2026, 4, 1, 9))
    make_visit(org_b, make_endpoint(org_b), start=at(NY, 2026, 4, 1, 9))
    make_visit(org_b, make_endpoint(org_b, environment="test"), start=at(NY, 2026, 4, 1, 10))
    build(org_a, date(2026, 4, 1), date(2026, 4, 1))

    assert [row["visits"] for row in stored(org_a).values()] == [1]
    assert stored(org_b) == {}


def test_the_build_is_a_fixed_number_of_queries_however_many_visits(org_a, django_assert_max_num_queries):
    ny, cph = make_endpoint(org_a), make_endpoint(org_a, zone=CPH, environment="test")

    def add(n: int) -> None:
        for i in range(n):
            visit = make_visit(
                org_a, ny if i % 2 else cph, start=at(NY, 2026, 4, 1 + i % 20, 9), department=f"D{i % 7}"
            )
            make_text(org_a, visit=visit, when=visit.scheduled_start - timedelta(hours=1))

    add(3)
    # lock, endpoints, delete, scratch table, two INSERT ... SELECT, count, bookkeeping
    # (+ one settings query on PostgreSQL, savepoints): the same for 3 visits and for 63
    with django_assert_max_num_queries(16):
        build(org_a, date(2026, 4, 1), date(2026, 4, 30))
    add(60)
    with django_assert_max_num_queries(16):
        build(org_a, date(2026, 4, 1), date(2026, 4, 30))


# --- the schedule: catch-up, late events -------------------------------------------------


def test_the_nightly_build_catches_up_every_missed_day_up_to_the_last_day_over_everywhere(org_a):
    ny = make_endpoint(org_a)
    with time_machine.travel(at(NY, 2026, 5, 1, 12), tick=False):
        for day in range(1, 11):
            make_visit(org_a, ny, start=at(NY, 2026, 5, day, 10))
    # 02:30 UTC on 11 May is still 10 May in New York: the last day over there is the 9th.
    with time_machine.travel(datetime(2026, 5, 11, 2, 30, tzinfo=UTC), tick=False):
        result = rollups_build_due(tenant=org_a)
    assert (result.first, result.last) == (date(2026, 5, 1), date(2026, 5, 9))
    with tenant_scope(org_a):
        build_row = ReportBuild.objects.get()
    assert build_row.last_built_day == date(2026, 5, 9)

    # The worker was down for three nights: the next run builds all of them, and the last 7 again.
    with time_machine.travel(datetime(2026, 5, 14, 6, 30, tzinfo=UTC), tick=False):
        result = rollups_build_due(tenant=org_a)
    assert (result.first, result.last) == (date(2026, 5, 7), date(2026, 5, 13))
    assert sorted(day for day, _, _ in stored(org_a)) == [date(2026, 5, d) for d in range(1, 11)]

    # Nothing new since: nothing to do.
    with time_machine.travel(datetime(2026, 5, 14, 7, 30, tzinfo=UTC), tick=False):
        assert rollups_build_due(tenant=org_a) is None


def test_a_copenhagen_only_organization_gets_yesterday_the_same_night(org_a):
    cph = make_endpoint(org_a, zone=CPH)
    with time_machine.travel(at(CPH, 2026, 5, 1, 12), tick=False):
        make_visit(org_a, cph, start=at(CPH, 2026, 5, 1, 10))
    with time_machine.travel(datetime(2026, 5, 2, 0, 30, tzinfo=UTC), tick=False):  # 02:30 in Copenhagen
        result = rollups_build_due(tenant=org_a)
    assert result.last == date(2026, 5, 1)


def test_late_events_for_an_old_day_are_folded_in_by_the_next_run(org_a):
    ny = make_endpoint(org_a)
    with time_machine.travel(at(NY, 2026, 4, 2, 12), tick=False):
        old = make_visit(org_a, ny, start=at(NY, 2026, 4, 2, 10), minutes=10)
    with time_machine.travel(datetime(2026, 5, 1, 10, tzinfo=UTC), tick=False):
        rollups_build_due(tenant=org_a)
    assert stored(org_a)[(date(2026, 4, 2), "CARD", "production")]["total_seconds"] == 600

    # Three weeks later the meeting provider delivers a missed "left" event: the visit ran longer.
    with time_machine.travel(datetime(2026, 5, 1, 15, tzinfo=UTC), tick=False), tenant_scope(org_a):
        VisitEvent.objects.create(
            tenant=org_a,
            visit=old,
            event_id="late-left",
            kind=EventKind.LEFT,
            role=ParticipantRole.PATIENT,
            participant_id="p1",
            occurred_at=old.started_at + timedelta(minutes=25),
            source=EventSource.TEAMS,
        )
        Visit.objects.filter(pk=old.pk).update(ended_at=old.started_at + timedelta(minutes=25))
    with time_machine.travel(datetime(2026, 5, 1, 16, tzinfo=UTC), tick=False):
        result = rollups_build_due(tenant=org_a)
    assert result.first == date(2026, 4, 2)
    assert stored(org_a)[(date(2026, 4, 2), "CARD", "production")]["total_seconds"] == 1500


def test_an_organization_without_endpoints_has_nothing_due(org_a):
    assert rollups_build_due(tenant=org_a) is None


# --- percentiles ---------------------------------------------------------------------------


def test_the_percentile_is_interpolated_within_its_bucket():
    # 10 waits: 10 20 | 40 50 | 70 100 | 130 | 200 | 250 | 400  (buckets 0-30, 30-60, 60-120, 120-180, ...)
    counts = [2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    # rank 9 is the last of the 240-300 bucket: its upper end.
    assert histogram_percentile(counts, 0.9, 400) == 300
    # rank 5 is the first of two in 60-120: halfway.
    assert histogram_percentile(counts, 0.5, 400) == 90
    assert histogram_percentile([0] * 14, 0.9) is None
    # Open-ended last bucket: it ends at the longest wait.
    assert histogram_percentile([0] * 13 + [4], 0.5, 7200) == 3600 + (7200 - 3600) // 2


def test_a_range_percentile_comes_from_summed_histograms(org_a):
    ny = make_endpoint(org_a)
    for day, wait in [
        (1, 10),
        (1, 20),
        (2, 40),
        (2, 50),
        (3, 70),
        (3, 100),
        (4, 130),
        (4, 200),
        (5, 250),
        (5, 400),
    ]:
        make_visit(org_a, ny, start=at(NY, 2026, 4, day, 9), wait=wait)
    build(org_a, date(2026, 4, 1), date(2026, 4, 5))

    from reports.definitions.usage import UsageReport

    with tenant_scope(org_a):
        report = UsageReport(tenant=org_a, params={"first": date(2026, 4, 1), "last": date(2026, 4, 5)})
        assert report.totals["p90_lobby_wait_seconds"] == 300
        assert report.totals["average_lobby_wait_seconds"] == pytest.approx(127)


def test_the_stored_percentile_is_the_python_one(org_a):
    import random

    from reports.models import BUCKET_FIELDS

    rng = random.Random(6)
    ny = make_endpoint(org_a)
    for i in range(400):
        wait = int(rng.lognormvariate(5, 1.1)) if i % 9 else None
        make_visit(org_a, ny, start=at(NY, 2026, 4, 1 + i % 20, 9), wait=wait, department=f"D{i % 3}")
    build(org_a, date(2026, 4, 1), date(2026, 4, 20))
    with tenant_scope(org_a):
        rows = list(DailyRollup.objects.all())
    assert len(rows) == 60
    for row in rows:
        expected = histogram_percentile(
            [getattr(row, name) for name in BUCKET_FIELDS], 0.9, row.lobby_wait_max_seconds
        )
        assert row.lobby_wait_p90_seconds == expected, row


# --- the allotment ---------------------------------------------------------------------------


def test_visits_are_within_the_allotment_in_start_order_within_their_local_month(org_a):
    from reports.definitions.visits import VirtualAppointmentsReport

    org_a.monthly_visit_allotment = 3
    org_a.save()
    ny = make_endpoint(org_a)
    # 31 March 23:30 in New York is 1 April in UTC: it is March's.
    march_last = make_visit(org_a, ny, start=at(NY, 2026, 3, 31, 23, 30), appointment="M-LAST")
    names = {}
    for n, day in enumerate([1, 2, 3, 4], start=1):
        names[f"A{n}"] = make_visit(org_a, ny, start=at(NY, 2026, 4, day, 9), appointment=f"A{n}")
    make_visit(org_a, ny, start=at(NY, 2026, 4, 2, 12), state=VisitState.NO_SHOW, appointment="NOSHOW")
    with tenant_scope(org_a):
        report = VirtualAppointmentsReport(
            tenant=org_a,
            params={"first": date(2026, 3, 31), "last": date(2026, 4, 30), "ordering": "start_utc"},
        )
        page, values = report.page()
    within = {row["appointment_id"]: row["within_allotment"] for row in values}
    assert within == {"M-LAST": True, "A1": True, "A2": True, "A3": True, "NOSHOW": None, "A4": False}
    assert march_last.pk


def test_allotment_warnings_go_once_per_threshold_per_month_to_the_administrators(org_a, admin_a, viewer_a):
    org_a.monthly_visit_allotment = 10
    org_a.save()
    ny = make_endpoint(org_a)
    now = at(NY, 2026, 4, 20, 12)
    for day in range(1, 8):
        make_visit(org_a, ny, start=at(NY, 2026, 4, day, 9))
    with time_machine.travel(now, tick=False):
        assert allotment_warnings_send(tenant=org_a) == []  # 70%
        make_visit(org_a, ny, start=at(NY, 2026, 4, 8, 9))
        sent = allotment_warnings_send(tenant=org_a)  # 80%
        assert [w.threshold for w in sent] == [80]
        assert len(mail.outbox) == 1
        assert mail.outbox[0].to == [admin_a.email]
        assert "80%" in mail.outbox[0].subject and "8 of 10" in mail.outbox[0].body
        assert allotment_warnings_send(tenant=org_a) == []
        assert len(mail.outbox) == 1
        make_visit(org_a, ny, start=at(NY, 2026, 4, 9, 9))
        make_visit(org_a, ny, start=at(NY, 2026, 4, 10, 9))
        assert [w.threshold for w in allotment_warnings_send(tenant=org_a)] == [100]
        assert len(mail.outbox) == 2 and "all 10" in mail.outbox[1].subject
        allotment_warnings_send(tenant=org_a)
    assert len(mail.outbox) == 2
    with tenant_scope(org_a):
        assert AllotmentWarning.objects.filter(sent_at__isnull=False).count() == 2
    # A new month starts from zero.
    with time_machine.travel(at(NY, 2026, 5, 2, 12), tick=False):
        assert allotment_warnings_send(tenant=org_a) == []


def test_crossing_both_thresholds_at_once_sends_only_the_full_one(org_a, admin_a):
    org_a.monthly_visit_allotment = 2
    org_a.save()
    ny = make_endpoint(org_a)
    for day in (1, 2, 3):
        make_visit(org_a, ny, start=at(NY, 2026, 4, day, 9))
    with time_machine.travel(at(NY, 2026, 4, 20, 12), tick=False):
        sent = allotment_warnings_send(tenant=org_a)
    assert [w.threshold for w in sent] == [100]
    assert len(mail.outbox) == 1
    with tenant_scope(org_a):
        assert set(AllotmentWarning.objects.values_list("threshold", flat=True)) == {80, 100}


def test_a_warning_that_failed_to_send_is_tried_again(org_a, admin_a):
    org_a.monthly_visit_allotment = 1
    org_a.save()
    make_visit(org_a, make_endpoint(org_a), start=at(NY, 2026, 4, 1, 9))
    with time_machine.travel(at(NY, 2026, 4, 20, 12), tick=False):
        with (
            mock.patch("reports.services.send_mail", side_effect=OSError("smtp down")),
            pytest.raises(OSError),
        ):
            allotment_warnings_send(tenant=org_a)
        assert len(mail.outbox) == 0
        assert [w.threshold for w in allotment_warnings_send(tenant=org_a)] == [100]
    assert len(mail.outbox) == 1


def test_the_scheduled_task_builds_every_organization_and_warns(
    org_a, org_b, admin_a, django_capture_on_commit_callbacks
):
    from reports.models import RollupJob
    from reports.tasks import reports_build_due

    org_a.monthly_visit_allotment = 1
    org_a.save()
    with time_machine.travel(at(NY, 2026, 4, 1, 12), tick=False):
        make_visit(org_a, make_endpoint(org_a), start=at(NY, 2026, 4, 1, 9))
        make_visit(org_b, make_endpoint(org_b), start=at(NY, 2026, 4, 1, 9))
    with (
        time_machine.travel(datetime(2026, 4, 2, 6, 30, tzinfo=UTC), tick=False),
        django_capture_on_commit_callbacks(execute=True) as builds,
    ):
        summary = reports_build_due()
    # One planning task per organization, then one build task per organization and day.
    assert summary == "2 organization(s) planned"
    assert len(builds) == 2
    assert len(stored(org_a)) == 1 and len(stored(org_b)) == 1
    with all_tenants():
        assert {(j.tenant_id, j.day, j.state) for j in RollupJob.objects.all()} == {
            (org_a.pk, date(2026, 4, 1), "done"),
            (org_b.pk, date(2026, 4, 1), "done"),
        }
    assert len(mail.outbox) == 1


# --- the command -----------------------------------------------------------------------------


def test_build_reports_rebuilds_a_day_or_a_range(org_a, march, capsys):
    call_command("build_reports", "--date", "2026-03-02", "--tenant", org_a.microsoft_tenant_id)
    assert {day for day, _, _ in stored(org_a)} == {date(2026, 3, 2)}
    call_command("build_reports", "--from", "2026-03-01", "--to", "2026-03-03")
    assert {day for day, _, _ in stored(org_a)} == {date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)}
    assert "organization(s) built" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments",
    [
        ["--date", "2026-13-01"],
        ["--from", "2026-03-01"],
        ["--from", "2026-03-05", "--to", "2026-03-01"],
        ["--date", "2026-03-01", "--from", "2026-03-01", "--to", "2026-03-02"],
        ["--tenant", "no-such-org"],
    ],
)
def test_build_reports_explains_wrong_arguments(db, arguments):
    with pytest.raises(CommandError):
        call_command("build_reports", *arguments)


def test_the_demo_activity_is_realistic_and_idempotent(settings, db):
    settings.DEBUG = True
    settings.PUBLIC_BASE_URL = "https://connector.example.org"
    call_command("seed_demo", "--support-password", "a-long-demo-password")
    with time_machine.travel(datetime(2026, 4, 15, 12, tzinfo=UTC), tick=False):
        call_command("generate_demo_activity", "--days", "5")
        with all_tenants():
            visits = Visit.objects.count()
            texts = OutboundMessage.objects.count()
            assert visits > 20 and texts > 20
            assert Visit.objects.filter(state=VisitState.NO_SHOW).exists()
            assert DailyRollup.objects.exists()
            # Made-up IDs only.
            assert not Visit.objects.exclude(appointment_id__startswith="DEMO-").exists()
        call_command("generate_demo_activity", "--days", "5")
        with all_tenants():
            assert Visit.objects.count() == visits
            assert OutboundMessage.objects.count() == texts
