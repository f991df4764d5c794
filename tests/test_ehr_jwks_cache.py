"""The EHR's signing keys are read once and kept; a rotated key makes one fresh read.

Real HTTP: the keys are served by a local server, id_tokens are signed with
keys made here.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache

from connector.smart import SmartError, verify_id_token
from tests.support.local_server import LocalServer, Route

CLIENT_ID = "open-ehr-connector"


class Keys:
    """An EHR's key set that the test can rotate."""

    def __init__(self) -> None:
        self.private = {}
        self.add("key-1")

    def add(self, kid: str) -> None:
        self.private[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def drop(self, kid: str) -> None:
        del self.private[kid]

    def document(self) -> dict:
        keys = []
        for kid, key in self.private.items():
            public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**public, "kid": kid, "use": "sig", "alg": "RS384"})
        return {"keys": keys}

    def id_token(self, kid: str, issuer: str) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": "u1",
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "fhirUser": "Practitioner/1",
        }
        return jwt.encode(claims, self.private[kid], algorithm="RS384", headers={"kid": kid})


@pytest.fixture
def ehr(settings):
    settings.EHR_INSECURE_HOSTS = ["127.0.0.1"]
    cache.clear()
    keys = Keys()
    with LocalServer() as server:
        server.add("/jwks", lambda _seen: Route(body=keys.document()))
        server.keys = keys
        server.configuration = {"jwks_uri": server.url("/jwks"), "issuer": server.url("/fhir")}
        yield server
    cache.clear()


def verify(ehr, kid: str):
    token = ehr.keys.id_token(kid, ehr.configuration["issuer"])
    return verify_id_token(
        token,
        smart_configuration=ehr.configuration,
        expected_issuers=[ehr.configuration["issuer"]],
        client_id=CLIENT_ID,
    )


def key_reads(ehr) -> int:
    return sum(1 for seen in ehr.seen if seen.route == "/jwks")


def test_the_keys_are_read_once_for_many_sign_ins(ehr):
    for _ in range(3):
        assert verify(ehr, "key-1").fhir_user == "Practitioner/1"
    assert key_reads(ehr) == 1


def test_a_rotated_key_is_found_with_one_fresh_read(ehr):
    verify(ehr, "key-1")
    ehr.keys.add("key-2")
    assert verify(ehr, "key-2").subject == "u1"
    assert verify(ehr, "key-2").subject == "u1"
    assert key_reads(ehr) == 2


def test_unknown_key_ids_cannot_make_the_connector_read_the_keys_again_and_again(ehr):
    verify(ehr, "key-1")
    stranger = Keys()
    stranger.private = {"forged": stranger.private["key-1"]}
    for _ in range(5):
        token = stranger.id_token("forged", ehr.configuration["issuer"])
        with pytest.raises(SmartError, match="key the EHR does not publish"):
            verify_id_token(
                token,
                smart_configuration=ehr.configuration,
                expected_issuers=[ehr.configuration["issuer"]],
                client_id=CLIENT_ID,
            )
    assert key_reads(ehr) == 2  # the first read, then one fresh read for the whole minute


def test_unreadable_keys_are_not_kept(ehr):
    ehr.add("/jwks", Route(body={"keys": "not a list"}))
    with pytest.raises(SmartError, match="could not be read"):
        verify(ehr, "key-1")
    ehr.add("/jwks", lambda _seen: Route(body=ehr.keys.document()))
    assert verify(ehr, "key-1").subject == "u1"


def test_a_process_keeps_the_keys_for_a_minute_without_asking_the_shared_cache(ehr):
    from unittest import mock

    from connector import kept_documents

    verify(ehr, "key-1")
    with mock.patch.object(cache, "get", side_effect=AssertionError("the shared cache was read")):
        assert verify(ehr, "key-1").subject == "u1"
    kept_documents.forget_all()  # a minute later, or another process: the shared cache has them
    assert verify(ehr, "key-1").subject == "u1"
    assert key_reads(ehr) == 1
