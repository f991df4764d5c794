"""Every report by identifier. A new report is one class decorated with `@register`."""

from __future__ import annotations

from django.http import Http404

from reports.base import Report

_REPORTS: dict[str, type[Report]] = {}


def register(report_class: type[Report]) -> type[Report]:
    identifier = report_class.identifier
    if identifier in _REPORTS and _REPORTS[identifier] is not report_class:
        raise ValueError(f"two reports are named {identifier!r}")
    _REPORTS[identifier] = report_class
    return report_class


def _load() -> None:
    # The built-in reports register themselves on import.
    import reports.definitions  # noqa: F401


def all_reports() -> list[type[Report]]:
    _load()
    return sorted(_REPORTS.values(), key=lambda r: (r.position, r.title))


def get_report(identifier: str) -> type[Report]:
    """The report class, or 404."""
    _load()
    try:
        return _REPORTS[identifier]
    except KeyError:
        raise Http404(f"No report named {identifier!r}.") from None
