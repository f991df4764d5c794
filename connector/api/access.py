"""Who may call each API action, declared in one place: endpoint × method → roles × API tokens.

`ACCESS` maps a URL name (see the `api_urls.py` modules) and an HTTP method to a
`Rule`: the organization roles of a signed-in person that may call it, and which
API tokens may. `DeclaredAccess` enforces it for every API view; an action with no
rule is refused (fail closed), and `tests/test_api_access.py` walks the URL
patterns so that a new view without a rule fails the suite. The "Permissions"
table of `docs/api.md` is generated from this module
(`manage.py api_access_table --write`) and checked by the same test.

A read-write token writes only where a script plausibly should (endpoint setup,
SMS settings, numbers, certificates, and the visit actions a clinician's console offers:
admit, end, guest links). Decisions about people, credentials and
live integrations (memberships, tokens, EHR approvers, rotating a record's
token, disabling an endpoint, approvals, consent) need a signed-in person.
"""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import permissions

from tenants.models import Role

ADMIN = (Role.ADMINISTRATOR,)
CONFIGURATION = (Role.ADMINISTRATOR, Role.EHR_APPROVER)
EVERY_ROLE = (Role.ADMINISTRATOR, Role.EHR_APPROVER, Role.VIEWER)
# Views outside an organization (the caller's own profile and access requests).
SIGNED_IN = ("signed_in",)
# Installation-wide views: the view's own permission decides (an admin session or an installation key).
SUPPORT_STAFF = ("support_staff",)


class Tokens:
    """Which API tokens may call an action."""

    NONE = "none"  # a signed-in person only
    ANY = "read"  # read and read-write tokens
    READ_WRITE = "read_write"  # read-write tokens only


@dataclass(frozen=True)
class Rule:
    roles: tuple[str, ...]
    tokens: str


def rule(roles: tuple[str, ...], tokens: str = Tokens.NONE) -> Rule:
    return Rule(roles=tuple(str(r) for r in roles), tokens=tokens)


ACCESS: dict[str, dict[str, Rule]] = {
    # --- the caller and organizations
    "api-me": {"GET": rule(SIGNED_IN, Tokens.ANY)},
    "api-tenants": {"GET": rule(SIGNED_IN, Tokens.ANY)},
    "api-tenant": {"GET": rule(EVERY_ROLE, Tokens.ANY)},
    "api-memberships": {"GET": rule(CONFIGURATION, Tokens.ANY), "POST": rule(ADMIN)},
    "api-membership": {
        "GET": rule(CONFIGURATION, Tokens.ANY),
        "PATCH": rule(ADMIN),
        "DELETE": rule(ADMIN),
    },
    "api-tokens": {"GET": rule(ADMIN), "POST": rule(ADMIN)},
    "api-token-revoke": {"POST": rule(ADMIN)},
    "api-access-requests": {"GET": rule(SIGNED_IN), "POST": rule(SIGNED_IN)},
    "api-access-request": {"GET": rule(SIGNED_IN)},
    # --- FHIR endpoints, approvals, integration records
    "api-endpoints": {"GET": rule(CONFIGURATION, Tokens.ANY), "POST": rule(ADMIN, Tokens.READ_WRITE)},
    "api-endpoint": {"GET": rule(CONFIGURATION, Tokens.ANY), "PATCH": rule(ADMIN, Tokens.READ_WRITE)},
    "api-endpoint-disable": {"POST": rule(ADMIN)},
    "api-endpoint-validate": {"POST": rule(ADMIN, Tokens.READ_WRITE)},
    "api-endpoint-approve": {"POST": rule((Role.EHR_APPROVER,))},
    "api-endpoint-reject": {"POST": rule((Role.EHR_APPROVER,))},
    "api-approvals": {"GET": rule(CONFIGURATION, Tokens.ANY)},
    "api-ehr-approvers": {"GET": rule(CONFIGURATION, Tokens.ANY), "PUT": rule(ADMIN)},
    "api-records": {"GET": rule(CONFIGURATION, Tokens.ANY)},
    "api-record-rotate": {"POST": rule(ADMIN)},
    # --- SMS
    "api-sms-consent": {"GET": rule(CONFIGURATION), "PUT": rule(ADMIN)},
    "api-sms-numbers": {"GET": rule(CONFIGURATION, Tokens.ANY), "POST": rule(ADMIN, Tokens.READ_WRITE)},
    "api-sms-settings": {"GET": rule(CONFIGURATION, Tokens.ANY), "PUT": rule(ADMIN, Tokens.READ_WRITE)},
    "api-sms-certificates": {
        "GET": rule(CONFIGURATION, Tokens.ANY),
        "POST": rule(ADMIN, Tokens.READ_WRITE),
    },
    "api-sms-appointments": {"GET": rule(CONFIGURATION, Tokens.ANY)},
    "api-sms-messages": {"GET": rule(CONFIGURATION, Tokens.ANY)},
    "api-sms-opt-outs": {"GET": rule(CONFIGURATION, Tokens.ANY)},
    # --- outbound webhooks (a secret is shown once, to whoever makes the endpoint)
    "api-webhooks": {"GET": rule(CONFIGURATION, Tokens.ANY), "POST": rule(ADMIN, Tokens.READ_WRITE)},
    "api-webhook": {
        "GET": rule(CONFIGURATION, Tokens.ANY),
        "PATCH": rule(ADMIN, Tokens.READ_WRITE),
        "DELETE": rule(ADMIN, Tokens.READ_WRITE),
    },
    "api-webhook-deliveries": {"GET": rule(CONFIGURATION, Tokens.ANY)},
    "api-webhook-redeliver": {"POST": rule(ADMIN, Tokens.READ_WRITE)},
    "api-webhook-rotate-secret": {"POST": rule(ADMIN, Tokens.READ_WRITE)},
    # --- reports
    "api-reports": {"GET": rule(EVERY_ROLE, Tokens.ANY)},
    "api-report": {"GET": rule(EVERY_ROLE, Tokens.ANY)},
    # --- visits (connector/visits/apis.py): IDs and times only, no names or phone numbers
    "api-visits": {"GET": rule(EVERY_ROLE, Tokens.ANY)},
    "api-visit": {"GET": rule(EVERY_ROLE, Tokens.ANY)},
    "api-visit-events": {"GET": rule(EVERY_ROLE, Tokens.ANY)},
    "api-visit-event-feed": {"GET": rule(EVERY_ROLE, Tokens.ANY)},
    "api-live-status": {"GET": rule(EVERY_ROLE, Tokens.ANY)},
    # Actions a hospital tool takes for a clinician (the console's services and rules).
    "api-visit-admit": {"POST": rule(ADMIN, Tokens.READ_WRITE)},
    "api-visit-end": {"POST": rule(ADMIN, Tokens.READ_WRITE)},
    "api-visit-guest-links": {"GET": rule(EVERY_ROLE, Tokens.ANY), "POST": rule(ADMIN, Tokens.READ_WRITE)},
    "api-visit-guest-link-revoke": {"POST": rule(ADMIN, Tokens.READ_WRITE)},
    # --- support (every organization of the region; reports.apis.SupportUsagePermission)
    "api-support-usage": {"GET": rule(SUPPORT_STAFF)},
}

# HEAD and OPTIONS answer like GET: they reveal no more than it does.
_AS_GET = {"HEAD", "OPTIONS"}


def rule_for(url_name: str | None, method: str) -> Rule | None:
    actions = ACCESS.get(url_name or "", {})
    return actions.get("GET" if method in _AS_GET else method)


def caller_token(request):
    """The API token the caller authenticated with, or None for a signed-in person."""
    token = getattr(request, "auth", None)
    return token if token is not None and hasattr(token, "token_hash") else None


class DeclaredAccess(permissions.BasePermission):
    """Allows a call only as `ACCESS` declares it; the caller's role comes from `TenantAPIViewMixin`."""

    message = "Your role in this organization does not allow this."

    def has_permission(self, request, view) -> bool:
        if not hasattr(view, request.method.lower()):
            return True  # the view answers 405 Method Not Allowed
        match = getattr(request, "resolver_match", None)
        url_name = match.url_name if match else None
        declared = rule_for(url_name, request.method)
        if declared is None:
            self.message = "This action is not available."
            return False
        token = caller_token(request)
        if token is not None:
            return self._token_may(token, declared, url_name)
        if declared.roles in (SIGNED_IN, SUPPORT_STAFF):
            return True  # SUPPORT_STAFF: the view's own permission class checks next
        return getattr(request, "tenant_role", None) in declared.roles

    def _token_may(self, token, declared: Rule, url_name) -> bool:
        if declared.tokens == Tokens.NONE and declared.roles == SIGNED_IN:
            self.message = "This endpoint is for a signed-in person, not an API token."
            return False
        if declared.tokens == Tokens.NONE:
            readable = rule_for(url_name, "GET")
            if readable is not None and readable.tokens != Tokens.NONE:
                self.message = "API tokens may read this but not change it; sign in as an administrator."
            else:
                self.message = "API tokens cannot use this endpoint; sign in as an administrator."
            return False
        if declared.tokens == Tokens.READ_WRITE and not token.allows_writes:
            self.message = "This API token is read-only; create a read-write token to make changes."
            return False
        return True
