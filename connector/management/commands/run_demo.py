"""Start the demo: the web server and a django-q2 worker, side by side."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Migrate, load demo data, then run the web server and a background worker (development only)."

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def handle(self, *args, **options):
        env_file = Path(settings.BASE_DIR) / ".env"
        if not env_file.exists():
            # First run: keys generated for this machine, then start again so the
            # settings (sandbox EHR, demo sign-in, keys) are read from them.
            out = io.StringIO()
            call_command("make_env", stdout=out)
            env_file.write_text(out.getvalue())
            env_file.chmod(0o600)
            self.stdout.write(f"Wrote {env_file} with keys generated for this machine.")
            argv = [sys.executable, "manage.py", "run_demo", "--addrport", options["addrport"]]
            os.execv(sys.executable, argv)  # noqa: S606
        if not settings.DEBUG:
            raise CommandError("run_demo is for development; it refuses to run with DEBUG=false.")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("createcachetable", verbosity=0)
        call_command("setup_schedules")
        call_command("seed_demo")
        from connector.demo import configure_demo_endpoints, configure_demo_sms, validate_demo_endpoints

        configure_demo_endpoints()
        configure_demo_sms()
        # A month of made-up visits and texts, so the reports are not empty.
        call_command("generate_demo_activity", days=30)
        addrport = options["addrport"]
        self.stdout.write(
            self.style.SUCCESS(
                f"\nThe EHR connector demo runs at http://{addrport}/\n"
                "  Portal: pick a demo user under 'Demo sign-in' (demo-admin, demo-approver, demo-viewer)\n"
                f"  Admin:  http://{addrport}/admin/ as 'support' (password printed above on first run;\n"
                "          set a new one with: python manage.py seed_demo --support-password ...)\n"
                f"  API:    http://{addrport}/api/docs/\n"
                f"  EHR:    http://{addrport}/sandbox-ehr/ (the sandbox EHR: start a visit as clinician or patient)\n"
                "  SMS:    python manage.py send_demo_siu   (in another terminal: a signed scheduling message;\n"
                "          the confirmation text appears in this output)\n"
            )
        )
        worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"])  # noqa: S603

        def validate_once_serving() -> None:
            # The demo endpoints live on this very server (the sandbox EHR):
            # validate them once it answers.
            for _ in range(60):
                try:
                    urllib.request.urlopen(f"http://{addrport}/healthz", timeout=2)  # noqa: S310
                    break
                except OSError:
                    time.sleep(0.5)
            validate_demo_endpoints()

        threading.Thread(target=validate_once_serving, daemon=True).start()
        try:
            call_command("runserver", addrport, use_reloader=False)
        finally:
            worker.terminate()
            worker.wait(timeout=15)
