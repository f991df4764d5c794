"""Liveness and readiness probes."""

import pytest
from django.db import OperationalError
from django_q.brokers import get_broker


def test_healthz_needs_neither_database_nor_broker(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_healthz_answers_get_only(client):
    assert client.post("/healthz").status_code == 405


def test_readyz_is_ok_when_database_and_broker_answer(client, db):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


@pytest.fixture
def broker_down(monkeypatch):
    """The configured broker (ORM or Redis) cannot be reached."""
    import redis

    def refuse(self, *args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    broker_class = type(get_broker())
    monkeypatch.setattr(broker_class, "ping", refuse)
    monkeypatch.setattr(broker_class, "queue_size", refuse)


def test_readyz_is_503_with_the_reason_when_the_broker_is_down(client, db, broker_down, caplog):
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "ok", "broker": "unreachable"}}
    assert "readiness: task broker unreachable: ConnectionError" in caplog.text


def test_readyz_is_503_when_the_broker_says_no(client, db, monkeypatch):
    monkeypatch.setattr(type(get_broker()), "ping", lambda self: False)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "unreachable"


def test_readyz_is_503_with_the_reason_when_the_database_is_down(client, db, monkeypatch):
    from django.db import connection

    def refuse():
        raise OperationalError("could not connect to server: Connection refused")

    # Undone before the test database is rolled back, which needs the real cursor.
    with monkeypatch.context() as patch:
        patch.setattr(connection, "cursor", refuse)
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unreachable"
    assert response.json()["status"] == "unavailable"


def test_probes_are_not_redirected_to_https_in_production(client, db, settings):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/sign-in/").status_code == 301
