"""Background tasks of the reports app. Each loads, scopes and calls one service; each is idempotent."""

from __future__ import annotations

from reports.services import rollups_build_all_due


def reports_build_due() -> str:
    """Scheduled (reports/schedules.py): every organization's due roll-ups, then its allotment warnings."""
    results = rollups_build_all_due()
    return f"{len(results)} organization(s) built" + "".join(f"; {r}" for r in results)
