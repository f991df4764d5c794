"""Tables of the sandbox EHR, a development peer for the demo and the tests.

Nothing here belongs to an organization: the sandbox plays a whole EHR, with its
own FHIR data, OAuth codes and tokens. Secrets (codes, tokens) are stored as
SHA-256 hashes, like a real authorization server would.
"""

from __future__ import annotations

from django.db import models


class Resource(models.Model):
    """One FHIR resource of one sandbox FHIR server (`r4` or `r4-other`)."""

    server = models.CharField(max_length=20, help_text="The flavor that serves it: r4 or r4-other.")
    resource_type = models.CharField(max_length=40)
    fhir_id = models.CharField("FHIR id", max_length=64)
    body = models.JSONField(help_text="The resource as FHIR JSON, without meta (added when served).")
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["server", "resource_type", "fhir_id"], name="sandbox_resource_key"
            )
        ]
        ordering = ["server", "resource_type", "fhir_id"]

    def __str__(self) -> str:
        return f"{self.server} {self.resource_type}/{self.fhir_id}"


class Launch(models.Model):
    """An EHR launch: the context the EHR hands to the app through `launch=<launch_id>`."""

    launch_id = models.CharField(max_length=64, unique=True)
    server = models.CharField(max_length=20)
    user_reference = models.CharField(max_length=100, help_text="Practitioner/<id> or Patient/<id>.")
    patient_id = models.CharField(max_length=64, blank=True)
    encounter_id = models.CharField(max_length=64, blank=True)
    appointment_id = models.CharField(max_length=64, blank=True)
    appointment_csn = models.CharField("appointment CSN", max_length=64, blank=True)
    conference_id = models.CharField(max_length=64, blank=True)
    department_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"launch {self.launch_id[:8]}... by {self.user_reference}"


class AuthorizationCode(models.Model):
    """A single-use authorization code, valid for 60 seconds."""

    code_hash = models.CharField(max_length=64, unique=True)
    client_id = models.CharField(max_length=200)
    redirect_uri = models.CharField(max_length=2000)
    scope = models.TextField()
    server = models.CharField(max_length=20, help_text="The flavor named by the aud parameter.")
    code_challenge = models.CharField(max_length=200)
    nonce = models.CharField(max_length=500, blank=True)
    user_reference = models.CharField(max_length=100)
    context = models.JSONField(default=dict, help_text="Launch context returned with the token.")
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"code for {self.client_id} ({self.user_reference})"


class AccessToken(models.Model):
    """A bearer token for the sandbox FHIR servers, with the context it was issued for."""

    token_hash = models.CharField(max_length=64, unique=True)
    refresh_token_hash = models.CharField(max_length=64, null=True, blank=True, unique=True)
    client_id = models.CharField(max_length=200)
    scope = models.TextField()
    server = models.CharField(max_length=20, blank=True, help_text="Empty: every server (backend services).")
    user_reference = models.CharField(max_length=100, blank=True)
    context = models.JSONField(default=dict)
    code = models.ForeignKey(AuthorizationCode, null=True, blank=True, on_delete=models.CASCADE)
    expires_at = models.DateTimeField()
    revoked = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"token for {self.client_id} ({self.scope})"


class ClientAssertionUse(models.Model):
    """A `jti` seen in a client assertion, kept until the assertion expires so it cannot be replayed."""

    client_id = models.CharField(max_length=200)
    jti = models.CharField(max_length=200)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client_id", "jti"], name="sandbox_assertion_once")]

    def __str__(self) -> str:
        return f"assertion {self.jti} of {self.client_id}"


class SigningKey(models.Model):
    """The sandbox's own RSA key for id_tokens, shared by the web server and the workers."""

    name = models.CharField(max_length=20, unique=True)
    private_key_pem = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"signing key {self.name}"
