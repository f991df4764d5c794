"""Rate limits for the API: a general one per caller, a tight one on token management."""

from rest_framework.throttling import SimpleRateThrottle


class ApiRateThrottle(SimpleRateThrottle):
    scope = "api"

    def get_cache_key(self, request, view):
        if getattr(request, "auth", None) is not None and hasattr(request.auth, "prefix"):
            ident = f"token:{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class TokenManagementThrottle(ApiRateThrottle):
    """Creating and revoking tokens; a burst suggests a script gone wrong or an attack."""

    scope = "token_management"

    def allow_request(self, request, view):
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        return super().allow_request(request, view)
