"""`{{ value|when }}`: a date or time in the product's one format (connector/datetimes.py)."""

from __future__ import annotations

from django import template

from connector.datetimes import when_html

register = template.Library()


@register.filter
def when(value, arg: str = ""):
    """{{ moment|when }} -> "5 Dec 2026, 08:44 UTC"; {{ moment|when:"date" }} -> "5 Dec 2026".

    Shown in the reader's zone by connector/static/js/local-time.js (in base.html).
    """
    return when_html(value, day_only=arg == "date")
