"""One date and time format across the product, zone named (connector/datetimes.py)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.template import Context, Template
from django.utils import timezone

from connector.datetimes import format_when, when_html

ROOT = Path(__file__).resolve().parent.parent
MOMENT = datetime(2026, 12, 5, 7, 44, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        (None, "5 Dec 2026, 07:44 UTC"),
        ("Europe/Paris", "5 Dec 2026, 08:44 CET"),
        ("America/New_York", "5 Dec 2026, 02:44 EST"),
        ("Asia/Dubai", "5 Dec 2026, 11:44 UTC+04"),  # a zone without an abbreviation: its offset
        ("Pacific/Auckland", "5 Dec 2026, 20:44 NZDT"),
    ],
)
def test_a_moment_reads_the_same_way_in_every_zone_with_the_zone_named(zone, expected):
    assert format_when(MOMENT, ZoneInfo(zone) if zone else None) == expected


def test_dates_and_empty_values():
    assert format_when(date(2026, 3, 1)) == "1 Mar 2026"
    assert format_when(MOMENT, ZoneInfo("Pacific/Auckland"), day_only=True) == "5 Dec 2026"  # the local day
    assert format_when(None) == ""
    assert format_when(datetime(2026, 12, 5, 7, 44)) == "5 Dec 2026, 07:44 UTC"  # naive means UTC


def test_the_template_filter_marks_the_moment_for_the_readers_zone():
    html = Template(
        '{% load when %}{{ moment|when }} / {{ moment|when:"date" }} / {{ day|when }} / {{ none|when }}'
    )
    rendered = html.render(Context({"moment": MOMENT, "day": date(2026, 12, 5), "none": None}))
    assert rendered == (
        '<time datetime="2026-12-05T07:44:00Z" data-local="datetime">5 Dec 2026, 07:44 UTC</time> / '
        '<time datetime="2026-12-05T07:44:00Z" data-local="date">5 Dec 2026</time> / 5 Dec 2026 / '
    )
    assert str(when_html(MOMENT.astimezone(ZoneInfo("Europe/Paris")))).count("07:44:00Z") == 1


def test_what_django_formats_by_itself_uses_the_same_format():
    with timezone.override(ZoneInfo("Europe/Paris")):
        assert Template("{{ moment }}|{{ moment|date }}").render(Context({"moment": MOMENT})) == (
            "5 Dec 2026, 08:44 CET|5 Dec 2026"
        )


def test_no_template_formats_a_time_its_own_way():
    """Times go through |when; |date may only name a month ("F Y") or fill a date input ("Y-m-d")."""
    allowed = {"F Y", "Y-m-d"}
    offenders = []
    for path in ROOT.glob("*/**/templates/**/*.html"):
        if ".venv" in path.parts:
            continue
        text = path.read_text()
        for fmt in re.findall(r"\|date:[\"']([^\"']*)[\"']", text):
            if fmt not in allowed:
                offenders.append(f"{path.relative_to(ROOT)}: |date:{fmt!r}")
        if re.search(r"\|time(:|\s|}})", text):
            offenders.append(f"{path.relative_to(ROOT)}: |time")
    assert not offenders, "use |when instead:\n" + "\n".join(offenders)
