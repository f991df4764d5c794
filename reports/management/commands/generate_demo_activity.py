"""Make a realistic month of visits and texts for the demo organizations (development only)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from reports.demo import demo_activity_exists, demo_activity_generate, demo_activity_remove


class Command(BaseCommand):
    help = (
        "Generate made-up visits, visit events, appointments and texts for the demo organizations over the "
        "last N days, then build their roll-ups. Safe to run again: only what is missing is added."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=30, help="How many days back from yesterday (default 30)."
        )
        parser.add_argument("--seed", type=int, default=7, help="Same seed, same activity.")
        parser.add_argument("--reset", action="store_true", help="Remove earlier demo activity first.")
        parser.add_argument(
            "--once",
            action="store_true",
            help="Add nothing when the demo organizations already have activity (run_demo's restarts).",
        )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("generate_demo_activity refuses to run in production mode (DEBUG=false).")
        if not 1 <= options["days"] <= 400:
            raise CommandError("--days must be between 1 and 400.")
        if options["reset"]:
            self.stdout.write(f"Removed {demo_activity_remove()} earlier demo row(s).")
        if options["once"] and not options["reset"] and demo_activity_exists():
            self.stdout.write("Demo activity exists already; nothing added.")
            return
        try:
            result = demo_activity_generate(days=options["days"], seed=options["seed"])
        except LookupError as error:
            raise CommandError(str(error)) from None
        for name, visits in result.per_tenant.items():
            self.stdout.write(f"  {name}: {visits} new visit(s)")
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo activity: {result.visits} visits, {result.events} events, {result.appointments} "
                f"appointments, {result.messages} texts added; roll-ups built."
            )
        )
