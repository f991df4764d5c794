"""URLs of the sandbox EHR, mounted at /sandbox-ehr/ (a development peer; 404 unless SANDBOX_EHR)."""

from django.urls import path

from connector.sandbox_ehr import fhir, launch, oauth

app_name = "sandbox_ehr"

urlpatterns = [
    path("", launch.home, name="home"),
    path("launch/", launch.start, name="launch-start"),
    path("oauth2/authorize", oauth.authorize, name="authorize"),
    path("oauth2/token", oauth.token, name="token"),
    path("oauth2/jwks", oauth.jwks, name="jwks"),
    path("oauth2/try-it/callback", oauth.try_callback, name="try-callback"),
    path("fhir/<str:flavor>", fhir.base, name="fhir-base"),
    path("fhir/<str:flavor>/metadata", fhir.metadata, name="metadata"),
    path("fhir/<str:flavor>/.well-known/smart-configuration", fhir.smart_config, name="smart-configuration"),
    path(
        "fhir/<str:flavor>/.well-known/openid-configuration", fhir.openid_config, name="openid-configuration"
    ),
    path("fhir/<str:flavor>/<str:resource_type>", fhir.type_level, name="fhir-type"),
    path("fhir/<str:flavor>/<str:resource_type>/<str:fhir_id>", fhir.instance, name="fhir-instance"),
]
