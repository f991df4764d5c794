"""The sandbox's FHIR servers ("flavors"): one good R4 server, a second one, and bad ones.

Each flavor lives at `{origin}/sandbox-ehr/fhir/<name>` and exists so the
connector's endpoint validation can be tested against servers that are right
and servers that are wrong in one specific way.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest
from django.urls import reverse


@dataclass(frozen=True)
class Flavor:
    name: str
    description: str
    fhir_version: str = "4.0.1"  # "1.0.2" serves a DSTU2 Conformance instead
    smart: bool = True  # serves .well-known/smart-configuration
    pkce: bool = True  # advertises code_challenge_methods_supported ["S256"]
    slow: bool = False  # metadata waits SANDBOX_EHR_SLOW_SECONDS
    redirect_to: str = ""  # metadata answers 302 here
    data: bool = False  # serves FHIR REST (read, search, update, create)
    # What an EHR launch's token response carries: "full" (fhirContext Appointment and Epic-style
    # extras: appointment CSN, conference and department IDs) or "minimal" (patient and encounter
    # only, as most EHRs and the third-party peer in ../shared/peers send).
    launch_context: str = "full"
    # False: launches only, like an EHR that has not enabled Backend Services or the write interactions
    # (no client_credentials, no system scopes, no update or create): validation is "OK with gaps".
    write_back: bool = True
    # False: no asymmetric client authentication (symmetric secrets only): validation fails.
    jwt_auth: bool = True


FLAVORS: dict[str, Flavor] = {
    flavor.name: flavor
    for flavor in [
        Flavor("r4", "The good server: FHIR R4, SMART with PKCE, demo data.", data=True),
        Flavor("r4-other", "A second good R4 server with its own data (another environment).", data=True),
        Flavor(
            "r4-generic",
            "A generic SMART EHR like the third-party peer: launches carry patient, encounter and fhirUser "
            "only; the appointment is found in FHIR (Encounter.appointment).",
            data=True,
            launch_context="minimal",
        ),
        Flavor("dstu2", "Answers metadata with a DSTU2 Conformance (FHIR 1.0.2).", fhir_version="1.0.2"),
        Flavor("no-smart", "Good R4 metadata, but no .well-known/smart-configuration.", smart=False),
        Flavor("no-pkce", "SMART configuration without S256 PKCE.", pkce=False),
        Flavor(
            "launch-only",
            "Launches, but no write-back: no client_credentials, no system scopes, no update or create.",
            write_back=False,
        ),
        Flavor(
            "no-jwt-auth",
            "Client secrets only: no private_key_jwt, no client-confidential-asymmetric.",
            jwt_auth=False,
        ),
        Flavor("slow", "Metadata answers after SANDBOX_EHR_SLOW_SECONDS.", slow=True),
        Flavor(
            "redirect-http",
            "Metadata redirects to a plain-http address.",
            redirect_to="http://example.com/fhir/metadata",
        ),
    ]
}

# The server an EHR launch from the sandbox home page uses.
DEFAULT_SERVER = "r4"


def flavor_get(name: str) -> Flavor | None:
    return FLAVORS.get(name)


def fhir_base_url(request: HttpRequest, flavor: str) -> str:
    """The FHIR base URL of a flavor as seen from this request's origin (no trailing slash)."""
    return request.build_absolute_uri(reverse("sandbox_ehr:fhir-base", kwargs={"flavor": flavor}))


def flavor_for_base_url(request: HttpRequest, url: str) -> Flavor | None:
    """The flavor whose base URL is `url` (an `aud` or `iss`), or None."""
    wanted = (url or "").rstrip("/")
    return next((f for f in FLAVORS.values() if fhir_base_url(request, f.name) == wanted), None)
