"""The README's two commands in one checkout, and `run_demo` as a newcomer meets it.

Real processes: `manage.py run_demo` runs as a subprocess on its own SQLite file and
settings file under tmp_path, so the checkout's `var/` and `.env` are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

BASE = Path(__file__).resolve().parent.parent
MANAGE = str(BASE / "manage.py")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _settings_seen(project: Path, **environment: str) -> dict:
    code = (
        "import json, connector.settings as s; print(json.dumps({'insecure': s.EHR_INSECURE_HOSTS, "
        "'demo_sign_in': s.DEMO_SIGN_IN, 'secret': s.SECRET_KEY, 'file': str(s.ENV_FILE)}))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ENV_FILE", "PYTEST_VERSION", "DEMO_SIGN_IN")}
    env.update(environment, PYTHONPATH=str(project))
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("where", [".env", "var/demo.env"])
def test_settings_ignore_the_developers_env_file_under_tests(tmp_path, where):
    # A copy of the settings module beside an env file like the one the demo used to write.
    (tmp_path / "connector").mkdir()
    (tmp_path / "connector" / "__init__.py").write_text("")
    shutil.copy(BASE / "connector" / "settings.py", tmp_path / "connector" / "settings.py")
    env_file = tmp_path / where
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(
        "EHR_INSECURE_HOSTS=127.0.0.1,localhost\nDEMO_SIGN_IN=true\nSECRET_KEY=from-the-file\n"
    )

    outside_tests = _settings_seen(tmp_path, DEMO_SIGN_IN="false")
    assert outside_tests["insecure"] == ["127.0.0.1", "localhost"]  # the file is read by manage.py ...
    assert outside_tests["secret"] == "from-the-file"
    assert outside_tests["demo_sign_in"] is False  # ... and the real environment still wins

    under_tests = _settings_seen(tmp_path, PYTEST_VERSION="8")
    assert under_tests == {
        "insecure": [],
        "demo_sign_in": True,  # the DEBUG default, not the file
        "secret": "dev-only-insecure-key-do-not-use-in-production",
        "file": "None",
    }
    named = _settings_seen(tmp_path, PYTEST_VERSION="8", ENV_FILE=str(env_file))
    assert named["secret"] == "from-the-file"  # only a file named explicitly is read


def test_this_test_run_read_no_env_file():
    if os.environ.get("ENV_FILE"):
        pytest.skip("ENV_FILE is set explicitly for this run")
    assert settings.ENV_FILE is None
    assert not settings.ENV_FROM_FILE


# --- run_demo as a process -------------------------------------------------------------


def _demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL")}
    env.update(
        ENV_FILE=str(tmp_path / "demo.env"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        PYTHONUNBUFFERED="1",
    )
    return env


def _run_demo(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603
        [sys.executable, MANAGE, "run_demo", *args],
        cwd=BASE,
        env=_demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _demo_visits(tmp_path: Path) -> dict[int, int]:
    with sqlite3.connect(tmp_path / "demo.sqlite3") as db:
        rows = db.execute(
            "SELECT endpoint_id, COUNT(*) FROM connector_visit WHERE appointment_id LIKE 'DEMO-%' "
            "GROUP BY endpoint_id"
        ).fetchall()
    return dict(rows)


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) for every process we can see."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return found


def _groups_of_children(pid: int) -> set[int]:
    return {pgid for child, (ppid, pgid, _) in _processes().items() if ppid == pid}


def _alive_in(groups: set[int]) -> list[int]:
    return [pid for pid, (_, pgid, state) in _processes().items() if pgid in groups and state != "Z"]


def _start_serving(tmp_path: Path, port: int) -> tuple[subprocess.Popen, set[int]]:
    demo = subprocess.Popen(  # noqa: S603
        [sys.executable, MANAGE, "run_demo", "--port", str(port), "--activity-days", "2"],
        cwd=BASE,
        env=_demo_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert demo.poll() is None, demo.stdout.read()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)  # noqa: S310
            break
        except OSError:
            time.sleep(0.5)
    else:
        demo.kill()
        pytest.fail("the demo never answered /healthz")
    groups = _groups_of_children(demo.pid)
    assert len(groups) == 2, "a web server and a worker, each in its own process group"
    return demo, groups


def _wait_gone(groups: set[int], seconds: float = 30) -> list[int]:
    deadline = time.monotonic() + seconds
    while _alive_in(groups) and time.monotonic() < deadline:
        time.sleep(0.3)
    return _alive_in(groups)


def test_run_demo_checks_its_port_before_setting_anything_up(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run_demo(tmp_path, "--port", str(port), timeout=60)
    assert done.returncode != 0
    assert f"port {port} is in use; run with --port " in done.stderr
    suggested = int(done.stderr.split("run with --port ")[1].split(".")[0])
    assert suggested != port
    assert not (tmp_path / "demo.env").exists()  # nothing written ...
    assert not (tmp_path / "demo.sqlite3").exists()  # ... nothing migrated


def test_run_demo_setup_is_idempotent_and_its_activity_is_only_for_its_own_endpoints(tmp_path):
    first = _run_demo(tmp_path, "--setup-only", "--activity-days", "3")
    assert first.returncode == 0, first.stderr
    assert "The demo is set up" in first.stdout
    env_file = tmp_path / "demo.env"
    assert "DEMO_SIGN_IN=true" in env_file.read_text()
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    visits = _demo_visits(tmp_path)
    assert len(visits) == 2 and all(
        count > 0 for count in visits.values()
    )  # one endpoint per demo organization

    # Someone tries the portal: a draft endpoint of their own in a demo organization.
    code = (
        "from connector.demo import DEMO_EPIC_TENANT_ID; from tenants.models import Tenant; "
        "from tenants.scoping import all_tenants, tenant_scope; "
        "from connector.services.endpoints import endpoint_create\n"
        "with all_tenants(): t = Tenant.objects.get(microsoft_tenant_id=DEMO_EPIC_TENANT_ID)\n"
        "with tenant_scope(t): endpoint_create(tenant=t, base_url='https://fhir.example.org/api/FHIR/R4', "
        "environment='production', label='Mine', time_zone='America/Chicago')"
    )
    made = subprocess.run(  # noqa: S603
        [sys.executable, MANAGE, "shell", "-c", code],
        cwd=BASE,
        env=_demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr

    again = _run_demo(tmp_path, "--setup-only", "--activity-days", "3")
    assert again.returncode == 0, again.stderr
    assert "Demo activity exists already; nothing added." in again.stdout
    assert _demo_visits(tmp_path) == visits  # same endpoints, same counts: nothing twice
    assert "DEMO_SIGN_IN=true" in env_file.read_text()


def test_run_demo_leaves_nothing_behind_on_ctrl_c_or_when_a_child_fails(tmp_path):
    first = _run_demo(tmp_path, "--setup-only", "--activity-days", "2")
    assert first.returncode == 0, first.stderr

    # Ctrl-C (SIGINT to run_demo): both children and everything they started stop.
    demo, groups = _start_serving(tmp_path, _free_port())
    demo.send_signal(signal.SIGINT)
    output, _ = demo.communicate(timeout=60)
    assert "Stopping the demo." in output
    assert _wait_gone(groups) == []

    # The web server dies under it: run_demo stops the worker too and says what happened.
    demo, groups = _start_serving(tmp_path, _free_port())
    web = next(
        pid
        for pid, (ppid, _, _) in _processes().items()
        if ppid == demo.pid and "runserver" in Path(f"/proc/{pid}/cmdline").read_text()
    )
    os.kill(web, signal.SIGKILL)
    output, _ = demo.communicate(timeout=60)
    assert demo.returncode != 0
    assert "The web server stopped (exit code -9); the demo stops too." in output
    assert _wait_gone(groups) == []


@pytest.mark.parametrize("written_by_the_demo", [True, False])
def test_the_demo_keeps_its_settings_in_var_and_moves_an_old_demo_env_there(
    tmp_path, settings, monkeypatch, written_by_the_demo
):
    from django.core.management import call_command

    settings.BASE_DIR = tmp_path
    settings.VAR_DIR = tmp_path / "var"
    monkeypatch.delenv("ENV_FILE", raising=False)
    monkeypatch.delenv("CONNECTOR_DEMO_ADDRESS", raising=False)
    header = "# Generated by `manage.py make_env` for local development. Never commit it.\n"
    dotenv = tmp_path / ".env"
    dotenv.write_text((header if written_by_the_demo else "# mine\n") + "SECRET_KEY=keys-of-the-old-demo\n")
    started = {}

    def execve(path, argv, env):
        started.update(argv=argv, env=env)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(SystemExit):
        call_command("run_demo", "--setup-only")

    demo_env = tmp_path / "var" / "demo.env"
    assert started["env"]["ENV_FILE"] == str(demo_env)
    assert started["argv"][-1] == "--setup-only"
    if written_by_the_demo:
        # The old demo's keys encrypt its database: they move, never regenerated; .env is gone.
        assert not dotenv.exists()
        assert "SECRET_KEY=keys-of-the-old-demo" in demo_env.read_text()
    else:
        assert dotenv.read_text().startswith("# mine")  # the developer's own file is never touched
        assert "DEMO_SIGN_IN=true" in demo_env.read_text()
        assert "keys-of-the-old-demo" not in demo_env.read_text()
    assert oct(demo_env.stat().st_mode & 0o777) == "0o600"
