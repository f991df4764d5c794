"""When to send: reminder times, quiet hours in the patient's local time, daylight saving."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone)


def _at(day, clock: time, zone: ZoneInfo) -> datetime:
    """`clock` on `day` in `zone`, as an aware UTC datetime (normalizing DST gaps)."""
    naive = datetime.combine(day, clock)
    return naive.replace(tzinfo=zone).astimezone(ZoneInfo("UTC"))


def in_quiet_hours(moment: datetime, zone: ZoneInfo, quiet_start: time, quiet_end: time) -> bool:
    clock = _local(moment, zone).time()
    if quiet_start > quiet_end:  # spans midnight, e.g. 21:00-08:00
        return clock >= quiet_start or clock < quiet_end
    return quiet_start <= clock < quiet_end


def nearest_allowed(
    moment: datetime,
    zone: ZoneInfo,
    quiet_start: time,
    quiet_end: time,
    *,
    not_before: datetime,
    not_after: datetime,
) -> datetime | None:
    """`moment` if allowed, else the nearest allowed moment within [not_before, not_after], else None.

    The last allowed minute before quiet hours and the first one after them are
    the candidates; the closer one wins.
    """
    if not in_quiet_hours(moment, zone, quiet_start, quiet_end):
        return moment if not_before <= moment <= not_after else None
    local = _local(moment, zone)
    candidates = []
    for day_offset in (-1, 0, 1):
        day = (local + timedelta(days=day_offset)).date()
        candidates.append(_at(day, quiet_start, zone) - timedelta(minutes=1))
        candidates.append(_at(day, quiet_end, zone))
    allowed = [
        c
        for c in candidates
        if not_before <= c <= not_after and not in_quiet_hours(c, zone, quiet_start, quiet_end)
    ]
    if not allowed:
        return None
    return min(allowed, key=lambda c: (abs((c - moment).total_seconds()), c))


def reminder_times(start: datetime, lead_minutes: list[int], zone: ZoneInfo) -> list[tuple[int, datetime]]:
    """(lead, when) for each lead time, computed in the appointment's zone.

    A lead of whole days is calendar days at the same wall-clock time in `zone`: the
    "day before" reminder of a 09:00 visit goes at 09:00 the day before even when the
    clocks changed in between (23 or 25 real hours). Other leads (1 h, 90 min) are exact
    durations: an hour before is an hour before.
    """
    times = []
    for lead in sorted(set(lead_minutes), reverse=True):
        if lead and lead % (24 * 60) == 0:
            local = start.astimezone(zone).replace(tzinfo=None) - timedelta(days=lead // (24 * 60))
            when = local.replace(tzinfo=zone).astimezone(ZoneInfo("UTC"))
        else:
            when = start - timedelta(minutes=lead)
        times.append((lead, when))
    return times
