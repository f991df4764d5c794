"""Pages the EHR opens in a frame get no `frame-ancestors` limit in their Content-Security-Policy.

Visit pages (launch, lobby, join, console, demo meeting) are opened by the EHR, often
inside its own window or frame, so their views carry Django's `xframe_options_exempt`.
The policy's `frame-ancestors 'none'` (settings.CONTENT_SECURITY_POLICY) would block them
there just as X-Frame-Options would: for those responses the directive is dropped, through
django-csp's per-response replacement (what its `csp_replace` decorator sets). Every other
directive still applies.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase


class FramedByTheEhrMiddleware:
    """Listed after CSPMiddleware, so it marks the response before the policy is written."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if getattr(response, "xframe_options_exempt", False):
            replaced = dict(getattr(response, "_csp_replace", None) or {})
            replaced["frame-ancestors"] = None
            response._csp_replace = replaced
        return response
