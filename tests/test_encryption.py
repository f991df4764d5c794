"""Field-level encryption: round trip, key rotation, clear errors for wrong keys."""

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from connector.encryption import EncryptedTextField, decrypt_text, encrypt_text, reencrypt_text

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


@pytest.fixture
def keys(settings):
    def use(*keys: str) -> None:
        settings.FIELD_ENCRYPTION_KEYS = list(keys)

    return use


def test_a_value_round_trips_and_is_not_stored_in_the_clear(keys):
    keys(OLD_KEY)

    token = encrypt_text("+1 415 555 0100")

    assert "415" not in token
    assert decrypt_text(token) == "+1 415 555 0100"


def test_encrypting_twice_gives_different_ciphertexts(keys):
    keys(OLD_KEY)

    assert encrypt_text("same") != encrypt_text("same")


def test_after_a_rotation_the_new_key_encrypts_and_the_old_one_still_decrypts(keys):
    keys(OLD_KEY)
    written_before = encrypt_text("before rotation")

    keys(NEW_KEY, OLD_KEY)
    written_after = encrypt_text("after rotation")

    assert decrypt_text(written_before) == "before rotation"
    assert decrypt_text(written_after) == "after rotation"
    keys(NEW_KEY)
    assert decrypt_text(written_after) == "after rotation"
    with pytest.raises(ImproperlyConfigured):
        decrypt_text(written_before)


def test_reencrypting_moves_a_value_to_the_newest_key(keys):
    keys(OLD_KEY)
    old_token = encrypt_text("move me")
    keys(NEW_KEY, OLD_KEY)

    new_token = reencrypt_text(old_token)

    keys(NEW_KEY)  # the old key can now be dropped
    assert decrypt_text(new_token) == "move me"


def test_a_value_encrypted_with_an_unknown_key_raises_a_clear_error(keys):
    keys(OLD_KEY)
    token = encrypt_text("secret")
    keys(NEW_KEY)

    with pytest.raises(
        ImproperlyConfigured, match="could not be decrypted with any key in FIELD_ENCRYPTION_KEYS"
    ):
        decrypt_text(token)


def test_a_tampered_value_raises_the_same_clear_error(keys):
    keys(OLD_KEY)
    token = encrypt_text("secret")

    with pytest.raises(ImproperlyConfigured, match="could not be decrypted"):
        decrypt_text(token[:-4] + "AAAA")


@pytest.mark.parametrize("bad_key", ["not-a-key", "c2hvcnQ=", ""])
def test_a_key_that_is_not_a_fernet_key_is_refused_clearly(keys, bad_key):
    keys(bad_key)

    with pytest.raises(ImproperlyConfigured, match="not a Fernet key"):
        encrypt_text("x")


def test_without_keys_production_mode_refuses_to_encrypt(keys, settings):
    keys()
    settings.DEBUG = False

    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEYS is required in production mode."):
        encrypt_text("x")


def test_without_keys_development_derives_a_stable_key_from_the_secret_key(keys, settings):
    keys()
    settings.DEBUG = True

    token = encrypt_text("demo")

    assert decrypt_text(token) == "demo"
    settings.SECRET_KEY = "another-development-secret-key-that-is-long-enough-0123456789"
    with pytest.raises(ImproperlyConfigured):
        decrypt_text(token)


def test_the_model_field_stores_ciphertext_and_reads_plain_text(keys):
    keys(NEW_KEY)
    field = EncryptedTextField()

    stored = field.get_prep_value("+14155550100")

    assert stored != "+14155550100"
    assert field.from_db_value(stored, None, None) == "+14155550100"
    assert field.get_prep_value("") == ""
    assert field.get_prep_value(None) is None
    assert field.from_db_value(None, None, None) is None


def test_rotate_field_keys_reencrypts_rows_with_the_newest_key(db, settings, org_a):
    import io

    from cryptography.fernet import Fernet
    from django.core.management import call_command
    from django.db import connection

    from sms.services.appointments import appointment_apply
    from tenants.scoping import tenant_scope
    from tests.support.sms import siu, sms_ready_endpoint

    old_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    endpoint = sms_ready_endpoint(org_a)
    with tenant_scope(org_a):
        appointment_apply(endpoint=endpoint, message=siu())
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("rotate_field_keys", stdout=io.StringIO())
    settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key is gone: rows must still read
    with connection.cursor() as cursor:
        cursor.execute("SELECT phone FROM sms_appointment")
        token = cursor.fetchone()[0]
    assert Fernet(new_key.encode()).decrypt(token.encode()).decode() == "+14155550123"
