"""Production mode (DEBUG=false) refuses to start on development defaults.

Each case starts Django in a fresh interpreter with an environment built here:
every variable of .env.example is set explicitly, so neither the developer's
shell nor a local .env (read with overwrite=False) can change the outcome.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
GOOD_SECRET_KEY = "k3J9-vQx2_Lr8mZt4Yw7Np1Hc6Bf0Ds5Ge8Ua2Io9Ek4Rj7Tl3Wq6Xn1Mv5Cz8Py0"


def _example_variables() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


@pytest.fixture
def production_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}}
    env.update(_example_variables())
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "connector.settings",
            "PYTHONDONTWRITEBYTECODE": "1",
            # Configured by the environment alone: a developer's .env must not fill the gaps.
            "ENV_FILE": "",
            "DEBUG": "false",
            "SECRET_KEY": GOOD_SECRET_KEY,
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "PHONE_HASH_KEY": "phone-hash-key-for-tests-0123456789abcdef",
            "ALLOWED_HOSTS": "connector.example.org",
            "CSRF_TRUSTED_ORIGINS": "https://connector.example.org",
            "PUBLIC_BASE_URL": "https://connector.example.org",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
            "REDIS_URL": "",
            "STATIC_ROOT": str(tmp_path / "static"),
            "DEMO_SIGN_IN": "false",
            "SANDBOX_EHR": "false",
            "EHR_INSECURE_HOSTS": "",
            "ENTRA_CLIENT_ID": "",
            "ENTRA_CLIENT_SECRET": "",
            "EMAIL_URL": "",
            "SECURE_SSL_REDIRECT": "true",
            "SECURE_HSTS_SECONDS": "31536000",
            "BEHIND_TLS_PROXY": "false",
        }
    )
    return env


def _start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = args or ("-c", "import django; django.setup()")
    return subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_complete_production_configuration_starts(production_env):
    result = _start(production_env)

    assert result.returncode == 0, result.stderr


def test_without_secrets_keys_and_hosts_it_refuses_and_names_each_missing_one(production_env):
    production_env.update({"SECRET_KEY": "", "FIELD_ENCRYPTION_KEYS": "", "ALLOWED_HOSTS": ""})

    result = _start(production_env)

    assert result.returncode != 0
    assert "ImproperlyConfigured: Refusing to start in production mode (DEBUG=false)" in result.stderr
    assert "SECRET_KEY must be set to a random value of at least 50 characters" in result.stderr
    assert "FIELD_ENCRYPTION_KEYS must list at least one Fernet key" in result.stderr
    assert "ALLOWED_HOSTS must name the host names this service answers to" in result.stderr


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"SECRET_KEY": "dev-only-insecure-key-do-not-use-in-production"}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "too-short-but-not-empty"}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "a" * 60}, "SECRET_KEY must be set"),
        ({"FIELD_ENCRYPTION_KEYS": ""}, "FIELD_ENCRYPTION_KEYS must list at least one Fernet key"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS must name the host names"),
        ({"PHONE_HASH_KEY": ""}, "PHONE_HASH_KEY must list at least one random key"),
        ({"PHONE_HASH_KEY": "short"}, "PHONE_HASH_KEY must list at least one random key"),
        ({"DEMO_SIGN_IN": "true"}, "DEMO_SIGN_IN cannot be on in production mode"),
        ({"SANDBOX_EHR": "true"}, "SANDBOX_EHR cannot be on in production mode"),
        (
            {"ENTRA_CLIENT_ID": "6731de76-14a6-49ae-97bc-6eba6914391e"},
            "ENTRA_CLIENT_ID and ENTRA_CLIENT_SECRET",
        ),
    ],
    ids=[
        "development-secret-key",
        "short-secret-key",
        "repetitive-secret-key",
        "no-encryption-keys",
        "no-allowed-hosts",
        "no-phone-hash-key",
        "short-phone-hash-key",
        "demo-sign-in",
        "sandbox-ehr",
        "half-configured-entra",
    ],
)
def test_it_refuses_one_insecure_setting_and_names_it(production_env, variables, named):
    production_env.update(variables)

    result = _start(production_env)

    assert result.returncode != 0
    assert "Refusing to start in production mode" in result.stderr
    assert named in result.stderr


def test_the_demo_sign_in_is_off_by_default_in_production(production_env):
    del production_env["DEMO_SIGN_IN"]

    result = _start(
        production_env,
        "-c",
        "import django; django.setup(); from django.conf import settings; print(settings.DEMO_SIGN_IN)",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_bad_encryption_key_is_refused_with_a_clear_message(production_env):
    production_env["FIELD_ENCRYPTION_KEYS"] = "not-a-fernet-key"

    result = _start(
        production_env,
        "-c",
        "import django; django.setup(); from connector.encryption import encrypt_text; encrypt_text('x')",
    )

    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key" in result.stderr


@pytest.fixture
def smart_signing_key(tmp_path) -> str:
    """An RSA key file for private_key_jwt, as `manage.py generate_signing_key` writes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    path = tmp_path / "smart-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return str(path)


def test_the_deploy_check_passes_on_a_good_production_configuration(production_env, smart_signing_key):
    production_env["SMART_SIGNING_KEY_FILES"] = smart_signing_key
    production_env.update(
        {"ENTRA_CLIENT_ID": "6731de76-14a6-49ae-97bc-6eba6914391e", "ENTRA_CLIENT_SECRET": "s3cret"}
    )

    result = _start(production_env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deploy_check_warns_when_no_one_but_staff_can_sign_in(production_env):
    result = _start(production_env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode != 0
    assert "connector.W001" in result.stderr + result.stdout
