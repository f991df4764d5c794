"""Serving for production: gunicorn with deploy/gunicorn.conf.py, and the Procfile's processes."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_the_procfile_names_web_worker_mllp_and_release_with_commands_that_exist():
    processes = _procfile()
    assert set(processes) == {"release", "web", "worker", "mllp"}
    commands = get_commands()
    for command in processes.values():
        for step in command.split("&&"):
            words = shlex.split(step)
            if words[:2] == ["python", "manage.py"]:
                assert words[2] in commands, f"{words[2]} is not a management command"
    assert processes["web"].startswith("gunicorn -c deploy/gunicorn.conf.py")


def test_gunicorn_serves_the_application_with_the_projects_configuration(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "2",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:  # noqa: S310
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, "gunicorn exited"
                assert time.monotonic() < deadline, "gunicorn never answered"
                time.sleep(0.2)
        server.send_signal(signal.SIGTERM)  # a deploy: stop gracefully
        output, _ = server.communicate(timeout=40)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, output
    assert "Booting worker" in output and "GET /healthz" not in output  # no access log (tokens in URLs)


def test_a_text_lease_outlasts_the_task_timeout_whatever_the_settings(settings):
    from datetime import timedelta

    from sms.services.dispatch import lease_length

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 15}
    settings.SMS_SEND_LEASE_SECONDS = 30
    assert lease_length() == timedelta(seconds=30)  # the chaos bench's short lease
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 120}
    assert lease_length() == timedelta(seconds=240)  # never shorter than twice the timeout
