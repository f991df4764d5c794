"""What the connector could not write to the EHR, for the organization's administrators.

The same rows as /admin/ shows the operators, scoped to the organization: the
write, the visit's appointment ID, the attempts and the EHR's own words about
why it failed, with a way to try again once the cause is fixed in the EHR.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from connector.portal.views import require_role
from connector.services.write_back import write_backs_needing_attention, write_backs_retry
from tenants.models import Role

SHOWN = 200


@login_required
def write_back_list(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR)
    rows = list(write_backs_needing_attention()[:SHOWN])
    return render(request, "portal/write_backs.html", {"rows": rows, "shown": SHOWN})


@login_required
@require_POST
def write_back_retry(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR)
    wanted = request.POST.getlist("write_back")
    if wanted == ["all"]:
        pks = list(write_backs_needing_attention().values_list("pk", flat=True))
    else:
        # Only this organization's rows: the queryset is tenant-scoped.
        pks = list(
            write_backs_needing_attention()
            .filter(pk__in=[p for p in wanted if p.isdigit()])
            .values_list("pk", flat=True)
        )
    queued, busy = write_backs_retry(pks=pks)
    if busy:
        messages.info(request, f"{busy} write(s) are being sent right now and were left alone.")
    messages.success(request, f"{queued} write(s) will be sent again now.")
    return redirect("portal:write-backs")
