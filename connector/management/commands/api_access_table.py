"""Print the API permissions table (from connector/api/access.py), or rewrite it in docs/api.md."""

from django.core.management.base import BaseCommand

from connector.api.access_table import DOCS_FILE, docs_with_table, permissions_table


class Command(BaseCommand):
    help = "Print the API permissions table, or with --write update it in docs/api.md."

    def add_arguments(self, parser):
        parser.add_argument("--write", action="store_true", help="Rewrite the table in docs/api.md.")

    def handle(self, *args, write: bool = False, **options):
        if not write:
            self.stdout.write(permissions_table())
            return
        DOCS_FILE.write_text(docs_with_table(DOCS_FILE.read_text()))
        self.stdout.write(f"Updated {DOCS_FILE}.")
