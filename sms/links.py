"""The short join link a text carries: /j/<code> redirects to the visit's patient link."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from sms.services.links import ShortLinkInvalid, short_link_resolve
from tenants.scoping import all_tenants


@never_cache
@require_GET
def short_join(request: HttpRequest, code: str) -> HttpResponse:
    # No tenant in the path: the code is global and unguessable (128 bits); the appointment it
    # names decides the organization, and the join pages scope by the visit from there.
    try:
        with all_tenants():
            path = short_link_resolve(code)
    except ShortLinkInvalid as error:
        return HttpResponse(error.message, status=404, content_type="text/plain; charset=utf-8")
    return HttpResponseRedirect(path)
