"""API views for organizations, memberships, API tokens and access requests."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from connector.api.access import DeclaredAccess
from connector.api.tenancy import TenantAPIViewMixin, caller_token
from connector.api.throttles import ApiRateThrottle, TokenManagementThrottle
from tenants import services
from tenants.models import (
    AccessRequest,
    ApiToken,
    DataRegion,
    EhrVendor,
    Membership,
    Role,
    Tenant,
    TokenScope,
)
from tenants.selectors import memberships_for_user, tenants_for_user, user_signed_in_from

# --- serializers (shapes only; rules live in services) ----------------------


class TenantSerializer(serializers.ModelSerializer):
    tenant_id = serializers.CharField(source="microsoft_tenant_id", read_only=True)

    class Meta:
        model = Tenant
        fields = ["tenant_id", "name", "ehr_vendor", "data_region", "status", "monthly_visit_allotment"]
        read_only_fields = fields


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "username", "email", "role", "ehr_username", "created_at"]
        read_only_fields = ["id", "username", "email", "created_at"]


NOT_ADDABLE = (
    "Nobody of this organization has signed in with this name. Ask them to sign in once with their "
    "Microsoft account of this organization, then add them."
)


class MembershipCreateSerializer(serializers.Serializer):
    username = serializers.CharField(
        help_text="The sign-in name of someone who has signed in once with this organization's Microsoft account."
    )
    role = serializers.ChoiceField(choices=Role.choices)
    ehr_username = serializers.CharField(required=False, allow_blank=True, default="")


class MembershipUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)
    ehr_username = serializers.CharField(required=False, allow_blank=True, default="")


class ApiTokenSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "scope", "created_by", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=TokenScope.choices, default=TokenScope.READ)


class AccessRequestSerializer(serializers.ModelSerializer):
    class Meta:
        model = AccessRequest
        fields = [
            "id",
            "organization_name",
            "microsoft_tenant_id",
            "ehr_vendor",
            "data_region",
            "technical_contact_email",
            "state",
            "requested_at",
            "reviewed_at",
            "rejection_reason",
        ]
        read_only_fields = ["id", "state", "requested_at", "reviewed_at", "rejection_reason"]


class AccessRequestCreateSerializer(serializers.Serializer):
    organization_name = serializers.CharField(max_length=200)
    microsoft_tenant_id = serializers.CharField(max_length=64)
    ehr_vendor = serializers.ChoiceField(choices=EhrVendor.choices)
    data_region = serializers.ChoiceField(choices=DataRegion.choices)
    technical_contact_email = serializers.EmailField()


# --- organizations -----------------------------------------------------------


@extend_schema(tags=["organizations"])
class TenantListApi(generics.ListAPIView):
    """The organizations the caller belongs to (a token: its own organization)."""

    serializer_class = TenantSerializer
    permission_classes = [IsAuthenticated, DeclaredAccess]
    filterset_fields = ["ehr_vendor", "data_region"]

    def get_queryset(self):
        token = caller_token(self.request)
        if token is not None:
            return Tenant.objects.filter(pk=token.tenant_id)
        return tenants_for_user(self.request.user)


@extend_schema(tags=["organizations"])
class TenantDetailApi(TenantAPIViewMixin, APIView):
    @extend_schema(responses=TenantSerializer)
    def get(self, request, tenant_id: str):
        return Response(TenantSerializer(self.tenant).data)


# --- memberships ---------------------------------------------------------------


@extend_schema(tags=["memberships"])
class MembershipListCreateApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = MembershipSerializer
    filterset_fields = ["role"]
    ordering_fields = ["created_at", "user__username"]

    def get_queryset(self):
        return Membership.objects.select_related("user").order_by("user__username")

    @extend_schema(request=MembershipCreateSerializer, responses={201: MembershipSerializer})
    def post(self, request, tenant_id: str):
        incoming = MembershipCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        user = user_signed_in_from(self.tenant, incoming.validated_data["username"])
        if user is None:
            raise serializers.ValidationError({"username": NOT_ADDABLE})
        membership = services.membership_create(
            tenant=self.tenant,
            user=user,
            role=incoming.validated_data["role"],
            ehr_username=incoming.validated_data["ehr_username"],
        )
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["memberships"])
class MembershipDetailApi(TenantAPIViewMixin, APIView):

    def _membership(self, pk: int) -> Membership:
        return get_object_or_404(Membership.objects.select_related("user", "tenant"), pk=pk)

    @extend_schema(responses=MembershipSerializer)
    def get(self, request, tenant_id: str, pk: int):
        return Response(MembershipSerializer(self._membership(pk)).data)

    @extend_schema(request=MembershipUpdateSerializer, responses=MembershipSerializer)
    def patch(self, request, tenant_id: str, pk: int):
        membership = self._membership(pk)
        incoming = MembershipUpdateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        membership = services.membership_update(membership=membership, **incoming.validated_data)
        return Response(MembershipSerializer(membership).data)

    @extend_schema(responses={204: None})
    def delete(self, request, tenant_id: str, pk: int):
        services.membership_delete(membership=self._membership(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- API tokens ------------------------------------------------------------------

ISSUED_TOKEN = inline_serializer(
    "IssuedApiToken",
    fields={
        "token": serializers.CharField(help_text="Shown once. Store it now; it cannot be read again."),
        "details": ApiTokenSerializer(),
    },
)


@extend_schema(tags=["api tokens"])
class ApiTokenListCreateApi(TenantAPIViewMixin, generics.ListAPIView):
    """Administrators manage their organization's tokens; tokens cannot mint tokens."""

    serializer_class = ApiTokenSerializer
    throttle_classes = [ApiRateThrottle, TokenManagementThrottle]
    filterset_fields = ["scope"]

    def get_queryset(self):
        return ApiToken.objects.select_related("created_by")

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: ISSUED_TOKEN})
    def post(self, request, tenant_id: str):
        incoming = ApiTokenCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        issued = services.api_token_create(
            tenant=self.tenant, created_by=request.user, **incoming.validated_data
        )
        return Response(
            {"token": issued.raw, "details": ApiTokenSerializer(issued.token).data},
            status=status.HTTP_201_CREATED,
        )


@extend_schema(tags=["api tokens"])
class ApiTokenRevokeApi(TenantAPIViewMixin, APIView):
    throttle_classes = [ApiRateThrottle, TokenManagementThrottle]

    @extend_schema(request=None, responses=ApiTokenSerializer)
    def post(self, request, tenant_id: str, pk: int):
        token = get_object_or_404(ApiToken, pk=pk)
        return Response(ApiTokenSerializer(services.api_token_revoke(token=token)).data)


# --- access requests and the caller ----------------------------------------------------


@extend_schema(tags=["access requests"])
class AccessRequestListCreateApi(generics.ListAPIView):
    """The caller's own access requests; a signed-in user may ask for a new organization."""

    serializer_class = AccessRequestSerializer
    permission_classes = [IsAuthenticated, DeclaredAccess]

    def get_queryset(self):
        # swagger_fake_view: the schema generator calls this with no user.
        if getattr(self, "swagger_fake_view", False) or caller_token(self.request) is not None:
            return AccessRequest.objects.none()
        return AccessRequest.objects.filter(requested_by=self.request.user)

    @extend_schema(request=AccessRequestCreateSerializer, responses={201: AccessRequestSerializer})
    def post(self, request):
        incoming = AccessRequestCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        access_request = services.access_request_create(
            requested_by=request.user,
            requester_email=request.user.email or incoming.validated_data["technical_contact_email"],
            **incoming.validated_data,
        )
        return Response(AccessRequestSerializer(access_request).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["access requests"])
class AccessRequestDetailApi(generics.RetrieveAPIView):
    serializer_class = AccessRequestSerializer
    permission_classes = [IsAuthenticated, DeclaredAccess]

    def get_queryset(self):
        # swagger_fake_view: the schema generator calls this with no user.
        if getattr(self, "swagger_fake_view", False) or caller_token(self.request) is not None:
            return AccessRequest.objects.none()
        return AccessRequest.objects.filter(requested_by=self.request.user)


@extend_schema(
    tags=["organizations"],
    responses=inline_serializer(
        "Me",
        fields={
            "username": serializers.CharField(),
            "memberships": inline_serializer(
                "MyMembership",
                fields={"tenant": TenantSerializer(), "role": serializers.CharField()},
                many=True,
            ),
        },
    ),
)
class MeApi(APIView):
    permission_classes = [IsAuthenticated, DeclaredAccess]

    def get(self, request):
        token = caller_token(request)
        if token is not None:
            return Response(
                {
                    "username": str(request.user),
                    "memberships": [
                        {"tenant": TenantSerializer(token.tenant).data, "role": f"token:{token.scope}"}
                    ],
                }
            )
        memberships = memberships_for_user(request.user)
        return Response(
            {
                "username": request.user.get_username(),
                "memberships": [
                    {"tenant": TenantSerializer(m.tenant).data, "role": m.role} for m in memberships
                ],
            }
        )
