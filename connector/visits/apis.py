"""Visits in the API: list and detail, events and the organization's event feed, live status, actions.

GET  /api/v1/tenants/<tid>/visits/?from=&to=&tz=&state=&environment=&department=&endpoint=&ordering=&cursor=
GET  /api/v1/tenants/<tid>/visits/<id>/
GET  /api/v1/tenants/<tid>/visits/<id>/events/?since=&limit=
GET  /api/v1/tenants/<tid>/visit-events/?since=&limit=
GET  /api/v1/tenants/<tid>/live-status/            (ETag; If-None-Match answered 304)
POST /api/v1/tenants/<tid>/visits/<id>/admit/      {"participant_id": ...}
POST /api/v1/tenants/<tid>/visits/<id>/end/
GET  /api/v1/tenants/<tid>/visits/<id>/guest-links/
POST /api/v1/tenants/<tid>/visits/<id>/guest-links/            {"kind": "interpreter"}
POST /api/v1/tenants/<tid>/visits/<id>/guest-links/<participant_id>/revoke/

The actions call the clinician console's services (connector/services/participants.py) and
honour `Idempotency-Key` (connector/api/idempotency.py). Guide: docs/api.md.
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import F
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from connector.api.idempotency import IDEMPOTENCY_HEADER, idempotent
from connector.api.pagination import KeysetPagination
from connector.api.tenancy import TenantAPIViewMixin
from connector.models import Environment, GuestInvite, ParticipantRole, Visit, VisitEvent
from connector.services.participants import (
    InvalidField,
    InviteLimitReached,
    NotInLobby,
    VisitNotStarted,
    guest_invite_create,
    guest_invite_revoke,
    participant_admit,
    visit_end,
)
from connector.services.visit_feed import live_version
from connector.services.visits import join_token_make
from connector.visits import selectors
from connector.visits.pages.common import public_url

ORDERINGS = {
    "time": "time",
    "-time": "-time",
    "created_at": "created_at",
    "-created_at": "-created_at",
}
MAX_EVENTS_PER_PAGE = 1000


class Conflict(serializers.ValidationError):
    """A well-formed request the visit's current state refuses (409, in the one error shape)."""

    status_code = status.HTTP_409_CONFLICT


# --- serializers -------------------------------------------------------------------------------


class VisitSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    appointment_id = serializers.CharField(help_text="The EHR's appointment ID (Epic: the CSN).")
    fhir_appointment_id = serializers.CharField()
    encounter_id = serializers.CharField()
    conference_id = serializers.CharField()
    department_id = serializers.CharField()
    endpoint = serializers.IntegerField(source="endpoint_id")
    environment = serializers.CharField(source="endpoint.environment")
    state = serializers.SerializerMethodField()
    appointment_status = serializers.CharField(help_text="Appointment.status as last read from the EHR.")
    unscheduled = serializers.BooleanField()
    found_by = serializers.CharField()
    scheduled_start = serializers.DateTimeField(allow_null=True)
    scheduled_end = serializers.DateTimeField(allow_null=True)
    time_zone = serializers.SerializerMethodField()
    arrived_at = serializers.DateTimeField(allow_null=True, help_text="The first lobby entry or join.")
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    lobby_wait_seconds = serializers.IntegerField(allow_null=True)
    duration_seconds = serializers.IntegerField(allow_null=True)
    peak_attendees = serializers.IntegerField()
    primary_clinician_ehr_id = serializers.CharField(help_text="The clinician's EHR user (fhirUser).")
    created_at = serializers.DateTimeField()

    @extend_schema_field(serializers.ChoiceField(choices=selectors.API_STATES))
    def get_state(self, visit: Visit) -> str:
        return selectors.api_state(visit)

    def get_time_zone(self, visit: Visit) -> str:
        return visit.time_zone or visit.endpoint.time_zone


class VisitDetailSerializer(VisitSerializer):
    participants = serializers.SerializerMethodField()
    device_tests = serializers.SerializerMethodField()
    write_back = serializers.SerializerMethodField()

    def to_representation(self, visit: Visit) -> dict:
        self._detail = selectors.visit_detail(visit)
        return super().to_representation(visit)

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_participants(self, visit: Visit) -> list:
        return self._detail["participants"]

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_device_tests(self, visit: Visit) -> list:
        return self._detail["device_tests"]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_write_back(self, visit: Visit) -> dict:
        return self._detail["write_back"]


class VisitEventSerializer(serializers.ModelSerializer):
    visit = serializers.CharField(source="visit.public_id")

    class Meta:
        model = VisitEvent
        fields = [
            "seq",
            "visit",
            "event_id",
            "kind",
            "role",
            "participant_id",
            "occurred_at",
            "received_at",
            "source",
            "data",
        ]
        read_only_fields = fields


class VisitQuery(serializers.Serializer):
    """The list's query parameters, checked before any query runs."""

    to = serializers.DateField(required=False, help_text="Last local day (in `tz`), included.")
    tz = serializers.CharField(required=False, default="UTC", help_text="An IANA zone, e.g. America/Chicago.")
    state = serializers.ChoiceField(choices=selectors.API_STATES, required=False)
    environment = serializers.ChoiceField(choices=Environment.choices, required=False)
    department = serializers.CharField(required=False, max_length=200)
    endpoint = serializers.IntegerField(required=False, min_value=1)
    ordering = serializers.ChoiceField(choices=list(ORDERINGS), required=False, default="time")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # "from" is a Python keyword, so the field cannot be declared as a class attribute.
        self.fields["from"] = serializers.DateField(
            required=False, help_text="First local day (in `tz`), included."
        )

    def validate_tz(self, value: str) -> ZoneInfo:
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError(
                f"{value!r} is not a time zone; send an IANA name such as Europe/Paris or UTC."
            ) from None

    def validate(self, attrs: dict) -> dict:
        first, last = attrs.get("from"), attrs.get("to")
        if first and last and first > last:
            raise serializers.ValidationError({"to": ["`to` must be on or after `from`."]})
        return attrs


def _local_midnight(day: datetime.date, zone: ZoneInfo) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=zone)


def _since(request) -> int:
    raw = request.query_params.get("since", "0") or "0"
    if not raw.isdigit() or len(raw) > 18:
        raise serializers.ValidationError(
            {"since": ["Send the `next_since` of your last page (a whole number), or 0 to start."]}
        )
    return int(raw)


def _limit(request) -> int:
    raw = request.query_params.get("limit", "100") or "100"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_EVENTS_PER_PAGE:
        raise serializers.ValidationError(
            {"limit": [f"Send a whole number from 1 to {MAX_EVENTS_PER_PAGE}."]}
        )
    return int(raw)


EVENT_FIELDS = (
    "seq",
    "event_id",
    "kind",
    "role",
    "participant_id",
    "occurred_at",
    "received_at",
    "source",
    "data",
)


def _event_page(request, events) -> Response:
    """A page of events after `since`, in feed order. Rows are read as values, not models:
    a warehouse pulls 1,000 at a time and model instances tripled the cost."""
    since, limit = _since(request), _limit(request)
    rows = list(
        events.filter(seq__gt=since)
        .order_by("seq")
        .values(*EVENT_FIELDS, public_id=F("visit__public_id"))[: limit + 1]
    )
    more = len(rows) > limit
    rows = rows[:limit]
    results = [
        {"seq": row["seq"], "visit": row["public_id"], **{name: row[name] for name in EVENT_FIELDS[1:]}}
        for row in rows
    ]
    return Response({"results": results, "next_since": rows[-1]["seq"] if rows else since, "has_more": more})


EVENT_PARAMETERS = [
    OpenApiParameter(
        "since", int, description="Return events after this position (`next_since`); 0: from the start."
    ),
    OpenApiParameter("limit", int, description=f"Events per page, 1 to {MAX_EVENTS_PER_PAGE} (default 100)."),
]
EVENT_PAGE = inline_serializer(
    "VisitEventPage",
    {
        "results": VisitEventSerializer(many=True),
        "next_since": serializers.IntegerField(),
        "has_more": serializers.BooleanField(),
    },
)


# --- reading -----------------------------------------------------------------------------------


class _VisitApi(TenantAPIViewMixin):
    def _visit(self, public_id: str) -> Visit:
        return get_object_or_404(selectors.visits_for_api(), public_id=public_id)


@extend_schema(tags=["visits"])
class VisitListApi(TenantAPIViewMixin, generics.ListAPIView):
    """Visits, filtered, in pages reached by `next` links (cursor pagination)."""

    serializer_class = VisitSerializer
    pagination_class = KeysetPagination
    filter_backends: list = []  # the query is checked by VisitQuery; ordering by the paginator

    def get_queryset(self):
        query = VisitQuery(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        visits = selectors.visits_for_api()
        zone = params["tz"]
        if params.get("from"):
            visits = visits.filter(time__gte=_local_midnight(params["from"], zone))
        if params.get("to"):
            visits = visits.filter(time__lt=_local_midnight(params["to"] + datetime.timedelta(days=1), zone))
        if params.get("state"):
            visits = selectors.visits_in_state(visits, params["state"])
        if params.get("environment"):
            visits = visits.filter(endpoint__environment=params["environment"])
        if params.get("department"):
            visits = visits.filter(department_id=params["department"])
        if params.get("endpoint"):
            visits = visits.filter(endpoint_id=params["endpoint"])
        self.paginator.ordering = ORDERINGS[params["ordering"]]
        return visits

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="First local day (in `tz`), included."),
            OpenApiParameter("to", OpenApiTypes.DATE, description="Last local day (in `tz`), included."),
            OpenApiParameter("tz", str, description="IANA time zone of `from`/`to` (default UTC)."),
            OpenApiParameter("state", str, enum=list(selectors.API_STATES)),
            OpenApiParameter("environment", str, enum=list(Environment.values)),
            OpenApiParameter("department", str, description="The EHR department ID."),
            OpenApiParameter("endpoint", int, description="The FHIR endpoint's id."),
            OpenApiParameter(
                "ordering",
                str,
                enum=list(ORDERINGS),
                description="`time`: scheduled start (creation for unscheduled visits). Default `time`.",
            ),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


@extend_schema(tags=["visits"])
class VisitDetailApi(_VisitApi, APIView):
    @extend_schema(responses=VisitDetailSerializer)
    def get(self, request, tenant_id: str, public_id: str):
        return Response(VisitDetailSerializer(self._visit(public_id)).data)


@extend_schema(tags=["visits"])
class VisitEventsApi(_VisitApi, APIView):
    @extend_schema(parameters=EVENT_PARAMETERS, responses=EVENT_PAGE)
    def get(self, request, tenant_id: str, public_id: str):
        visit = self._visit(public_id)
        return _event_page(request, VisitEvent.objects.filter(visit=visit))


@extend_schema(tags=["visits"])
class VisitEventFeedApi(TenantAPIViewMixin, APIView):
    """Every visit event of the organization in feed order, for incremental loads.

    Keep `next_since` and send it back as `since`: the feed never skips or repeats an event
    (positions are handed out in commit order, connector/services/visit_feed.py).
    """

    @extend_schema(parameters=EVENT_PARAMETERS, responses=EVENT_PAGE)
    def get(self, request, tenant_id: str):
        return _event_page(request, VisitEvent.objects.all())


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [value.strip() for value in header.split(",")]
    return "*" in candidates or any(value.removeprefix("W/") == etag for value in candidates)


@extend_schema(tags=["visits"])
class LiveStatusApi(TenantAPIViewMixin, APIView):
    """Who is waiting in which visit's lobby, and who is connected, now (for wall boards).

    Poll with `If-None-Match: <the last ETag>`: while nothing changed the answer is 304, found
    by reading one number (the organization's live version), without computing the body.
    """

    @extend_schema(
        parameters=[OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER)],
        responses={200: OpenApiTypes.OBJECT, 304: None},
    )
    def get(self, request, tenant_id: str):
        # The version is read before the body: a change in between makes the body newer than
        # its ETag, so the next poll gets a fresh body; never an old body under a new ETag.
        version = live_version(tenant_id=self.tenant.pk)
        etag = f'"live-{version}"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if _etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response({"version": version, **selectors.live_status()}, headers=headers)


# --- actions (read-write tokens; the console's services and rules) -----------------------------


class AdmitRequest(serializers.Serializer):
    participant_id = serializers.CharField(max_length=200, help_text="An `in_lobby` participant_id.")


class GuestLinkRequest(serializers.Serializer):
    kind = serializers.ChoiceField(choices=GuestInvite.Kind.choices)


class GuestLinkSerializer(serializers.ModelSerializer):
    class Meta:
        model = GuestInvite
        fields = ["participant_id", "kind", "created_at", "revoked_at"]
        read_only_fields = fields


def _visit_row(visit: Visit) -> dict:
    return VisitSerializer(selectors.visits_for_api().get(pk=visit.pk)).data


ACTION_HEADERS = IDEMPOTENCY_HEADER


@extend_schema(tags=["visits"], parameters=ACTION_HEADERS)
class VisitAdmitApi(_VisitApi, APIView):
    """Admit someone waiting in the visit's lobby (as the clinician's console does)."""

    @extend_schema(
        request=AdmitRequest,
        responses=inline_serializer(
            "AdmitResult",
            {
                "admitted": serializers.CharField(),
                "created": serializers.BooleanField(),
                "visit": VisitSerializer(),
            },
        ),
    )
    @idempotent
    def post(self, request, tenant_id: str, public_id: str):
        visit = self._visit(public_id)
        incoming = AdmitRequest(data=request.data)
        incoming.is_valid(raise_exception=True)
        participant_id = incoming.validated_data["participant_id"]
        try:
            _, created = participant_admit(visit=visit, participant_id=participant_id)
        except NotInLobby:
            raise Conflict(
                {
                    "participant_id": [
                        "This participant is not waiting in this visit's lobby; read live-status again."
                    ]
                }
            ) from None
        return Response({"admitted": participant_id, "created": created, "visit": _visit_row(visit)})


@extend_schema(tags=["visits"], parameters=ACTION_HEADERS)
class VisitEndApi(_VisitApi, APIView):
    """End the visit: everyone still connected is recorded as having left, which completes it."""

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "EndResult", {"departures_recorded": serializers.IntegerField(), "visit": VisitSerializer()}
        ),
    )
    @idempotent
    def post(self, request, tenant_id: str, public_id: str):
        visit = self._visit(public_id)
        try:
            recorded = visit_end(visit=visit)
        except VisitNotStarted as refusal:
            raise Conflict({"visit": [str(refusal)]}) from None
        return Response({"departures_recorded": recorded, "visit": _visit_row(visit)})


@extend_schema(tags=["visits"])
class GuestLinksApi(_VisitApi, APIView):
    """The visit's guest links. Listing shows no link (a link is a credential); creating returns it once."""

    @extend_schema(responses=inline_serializer("GuestLinkList", {"results": GuestLinkSerializer(many=True)}))
    def get(self, request, tenant_id: str, public_id: str):
        visit = self._visit(public_id)
        invites = GuestInvite.objects.filter(visit=visit).order_by("created_at", "pk")
        return Response({"results": GuestLinkSerializer(invites, many=True).data})

    @extend_schema(
        request=GuestLinkRequest,
        parameters=ACTION_HEADERS,
        responses={
            201: inline_serializer(
                "GuestLinkCreated",
                {
                    "participant_id": serializers.CharField(),
                    "kind": serializers.CharField(),
                    "created_at": serializers.DateTimeField(),
                    "revoked_at": serializers.DateTimeField(allow_null=True),
                    "link": serializers.URLField(),
                },
            )
        },
    )
    @idempotent
    def post(self, request, tenant_id: str, public_id: str):
        visit = self._visit(public_id)
        incoming = GuestLinkRequest(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            invite = guest_invite_create(visit=visit, kind=incoming.validated_data["kind"])
        except InvalidField as error:
            raise serializers.ValidationError({error.field: [error.message]}) from None
        except InviteLimitReached as refusal:
            raise Conflict({"kind": [refusal.message]}) from None
        token = join_token_make(visit=visit, role=ParticipantRole.GUEST, participant_id=invite.participant_id)
        link = public_url(reverse("visits:join", kwargs={"token": token}))
        return Response({**GuestLinkSerializer(invite).data, "link": link}, status=status.HTTP_201_CREATED)


@extend_schema(tags=["visits"], parameters=ACTION_HEADERS)
class GuestLinkRevokeApi(_VisitApi, APIView):
    """Withdraw a guest link: the guest's pages refuse it from now on. Revoking twice is the same."""

    @extend_schema(request=None, responses=GuestLinkSerializer)
    @idempotent
    def post(self, request, tenant_id: str, public_id: str, participant_id: str):
        visit = self._visit(public_id)
        invite = get_object_or_404(GuestInvite.objects.filter(visit=visit), participant_id=participant_id)
        guest_invite_revoke(visit=visit, participant_id=participant_id)
        invite.refresh_from_db()
        return Response(GuestLinkSerializer(invite).data)
