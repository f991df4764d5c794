"""API views for FHIR endpoints, approvals and integration records."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from connector.api.idempotency import IDEMPOTENCY_HEADER, idempotent
from connector.api.tenancy import TenantAPIViewMixin
from connector.ehr_http import EhrHttpError
from connector.endpoint_checks import fetch_smart_configuration
from connector.models import EhrApprover, EndpointApproval, Environment, FhirEndpoint, IntegrationRecord
from connector.services import endpoints as endpoint_services
from connector.services.approvals import approval_grant, approval_reject, approver_identity_complete
from connector.services.records import integration_record_rotate_token
from connector.smart import SmartError, expected_issuers, verify_id_token

# --- serializers -------------------------------------------------------------


class EndpointSerializer(serializers.ModelSerializer):
    # The features the last validation found lost or unconfirmed ("OK with gaps"); [] when none.
    validation_gaps = serializers.JSONField(read_only=True)

    class Meta:
        model = FhirEndpoint
        fields = [
            "id",
            "base_url",
            "environment",
            "label",
            "time_zone",
            "write_back_enabled",
            "write_join_link",
            "smart_client_id",
            "status",
            "config_version",
            "validation_step",
            "last_validation",
            "validation_gaps",
            "last_validated_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            f
            for f in fields
            if f
            not in (
                "base_url",
                "environment",
                "label",
                "time_zone",
                "write_back_enabled",
                "write_join_link",
                "smart_client_id",
                "validation_gaps",
            )
        ]


class EndpointWriteSerializer(serializers.Serializer):
    base_url = serializers.CharField(max_length=500)
    environment = serializers.ChoiceField(choices=Environment.choices)
    label = serializers.CharField(max_length=200)
    time_zone = serializers.CharField(max_length=64, default="UTC")
    write_back_enabled = serializers.BooleanField(default=False)
    write_join_link = serializers.BooleanField(default=False)
    smart_client_id = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="The client ID the EHR assigned to the connector for this endpoint; blank uses the "
        "installation's SMART_CLIENT_ID.",
    )


class EndpointPatchSerializer(EndpointWriteSerializer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False


class ApprovalSerializer(serializers.ModelSerializer):
    decided_by = serializers.CharField(source="decided_by.username", read_only=True)

    class Meta:
        model = EndpointApproval
        fields = [
            "id",
            "endpoint",
            "config_version",
            "base_url",
            "decision",
            "comment",
            "decided_by",
            "ehr_username",
            "ehr_user",
            "matched_as",
            "decided_at",
        ]
        read_only_fields = fields


class DecisionSerializer(serializers.Serializer):
    id_token = serializers.CharField(
        help_text="An id_token from a SMART sign-in to this endpoint's EHR (scopes openid fhirUser), "
        "issued to this installation's client ID; it proves which EHR user decides."
    )
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    access_token = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="The same sign-in's access token: only needed when the approver is listed by Practitioner "
        "identifier (the connector reads the Practitioner named by fhirUser with it, then forgets it).",
    )


class RecordSerializer(serializers.ModelSerializer):
    endpoint_url = serializers.CharField(source="endpoint.base_url", read_only=True)
    environment = serializers.CharField(source="endpoint.environment", read_only=True)

    class Meta:
        model = IntegrationRecord
        fields = [
            "id",
            "endpoint",
            "endpoint_url",
            "environment",
            "kind",
            "config_version",
            "out_of_date",
            "launch_url",
            "redirect_uri",
            "client_id",
            "scopes",
            "context_parameters",
            "context_token",
            "details",
            "generated_at",
        ]
        read_only_fields = fields


class ApproversSerializer(serializers.Serializer):
    usernames = serializers.ListField(
        child=serializers.CharField(max_length=500),
        allow_empty=True,
        help_text="One entry per approver: EHR username, fhirUser reference or Practitioner identifier.",
    )


# --- endpoints -------------------------------------------------------------------


@extend_schema(tags=["fhir endpoints"])
class EndpointListCreateApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = EndpointSerializer
    filterset_fields = ["status", "environment"]
    ordering_fields = ["label", "created_at"]

    def get_queryset(self):
        return FhirEndpoint.objects.filter(deleted_at__isnull=True).order_by("environment", "label")

    @extend_schema(
        request=EndpointWriteSerializer, responses={201: EndpointSerializer}, parameters=IDEMPOTENCY_HEADER
    )
    @idempotent
    def post(self, request, tenant_id: str):
        incoming = EndpointWriteSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        endpoint = endpoint_services.endpoint_create(tenant=self.tenant, **incoming.validated_data)
        endpoint = endpoint_services.endpoint_request_validation(endpoint=endpoint)
        return Response(EndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["fhir endpoints"])
class EndpointDetailApi(TenantAPIViewMixin, APIView):
    def _endpoint(self, pk: int) -> FhirEndpoint:
        return get_object_or_404(FhirEndpoint.objects.select_related("tenant"), pk=pk)

    @extend_schema(responses=EndpointSerializer)
    def get(self, request, tenant_id: str, pk: int):
        return Response(EndpointSerializer(self._endpoint(pk)).data)

    @extend_schema(request=EndpointPatchSerializer, responses=EndpointSerializer)
    def patch(self, request, tenant_id: str, pk: int):
        # partial: fields left out keep their value (no defaults applied).
        incoming = EndpointPatchSerializer(data=request.data, partial=True)
        incoming.is_valid(raise_exception=True)
        endpoint = endpoint_services.endpoint_update(endpoint=self._endpoint(pk), **incoming.validated_data)
        if not endpoint.last_validation and endpoint.status != "disabled":
            endpoint = endpoint_services.endpoint_request_validation(endpoint=endpoint)
        return Response(EndpointSerializer(endpoint).data)


@extend_schema(tags=["fhir endpoints"])
class EndpointDisableApi(TenantAPIViewMixin, APIView):
    @extend_schema(request=None, responses=EndpointSerializer)
    def post(self, request, tenant_id: str, pk: int):
        endpoint = get_object_or_404(FhirEndpoint.objects.select_related("tenant"), pk=pk)
        return Response(EndpointSerializer(endpoint_services.endpoint_disable(endpoint=endpoint)).data)


@extend_schema(tags=["fhir endpoints"])
class EndpointValidateApi(TenantAPIViewMixin, APIView):
    """Start a validation; poll the endpoint for `status`, `validation_step` and `last_validation`."""

    @extend_schema(request=None, responses={202: EndpointSerializer}, parameters=IDEMPOTENCY_HEADER)
    @idempotent
    def post(self, request, tenant_id: str, pk: int):
        endpoint = get_object_or_404(FhirEndpoint.objects.select_related("tenant"), pk=pk)
        endpoint = endpoint_services.endpoint_request_validation(endpoint=endpoint)
        return Response(EndpointSerializer(endpoint).data, status=status.HTTP_202_ACCEPTED)


class _DecisionApi(TenantAPIViewMixin, APIView):
    decide = staticmethod(approval_grant)

    @extend_schema(request=DecisionSerializer, responses={201: ApprovalSerializer})
    def post(self, request, tenant_id: str, pk: int):
        endpoint = get_object_or_404(FhirEndpoint.objects.select_related("tenant"), pk=pk)
        incoming = DecisionSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            configuration = fetch_smart_configuration(endpoint.base_url)
            identity = verify_id_token(
                incoming.validated_data["id_token"],
                smart_configuration=configuration,
                expected_issuers=expected_issuers(endpoint.base_url, configuration),
            )
        except (SmartError, EhrHttpError) as error:
            raise serializers.ValidationError({"id_token": error.message}) from error
        identity = approver_identity_complete(
            endpoint=endpoint, identity=identity, access_token=incoming.validated_data["access_token"]
        )
        approval = self.decide(
            endpoint=endpoint,
            decided_by=request.user,
            identity=identity,
            comment=incoming.validated_data["comment"],
        )
        return Response(ApprovalSerializer(approval).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["approvals"])
class EndpointApproveApi(_DecisionApi):
    decide = staticmethod(approval_grant)


@extend_schema(tags=["approvals"])
class EndpointRejectApi(_DecisionApi):
    decide = staticmethod(approval_reject)


@extend_schema(tags=["approvals"])
class ApprovalListApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = ApprovalSerializer
    filterset_fields = ["endpoint", "decision"]

    def get_queryset(self):
        return EndpointApproval.objects.select_related("decided_by")


@extend_schema(tags=["approvals"])
class ApproversApi(TenantAPIViewMixin, APIView):
    """The EHR usernames allowed to approve endpoints (Epic)."""

    @extend_schema(responses=ApproversSerializer)
    def get(self, request, tenant_id: str):
        approvers = list(EhrApprover.objects.all())
        return Response(
            {
                "usernames": [a.ehr_username for a in approvers],
                # Which form of each entry matched the approver's last EHR sign-in ("" if none yet).
                "approvers": [
                    {
                        "entry": a.ehr_username,
                        "last_matched_as": a.last_matched_as,
                        "last_matched_at": a.last_matched_at.isoformat() if a.last_matched_at else None,
                    }
                    for a in approvers
                ],
            }
        )

    @extend_schema(request=ApproversSerializer, responses=ApproversSerializer)
    def put(self, request, tenant_id: str):
        incoming = ApproversSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        saved = endpoint_services.ehr_approvers_set(
            tenant=self.tenant, usernames=incoming.validated_data["usernames"]
        )
        return Response({"usernames": [a.ehr_username for a in saved]})


# --- integration records ----------------------------------------------------------------


@extend_schema(tags=["integration records"])
class RecordListApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = RecordSerializer
    filterset_fields = ["endpoint", "kind", "out_of_date"]

    def get_queryset(self):
        return IntegrationRecord.objects.select_related("endpoint").order_by("endpoint", "kind")


@extend_schema(tags=["integration records"])
class RecordRotateTokenApi(TenantAPIViewMixin, APIView):
    @extend_schema(request=None, responses=RecordSerializer)
    def post(self, request, tenant_id: str, pk: int):
        record = get_object_or_404(IntegrationRecord.objects.select_related("endpoint"), pk=pk)
        try:
            record = integration_record_rotate_token(record=record)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from error
        return Response(RecordSerializer(record).data)
