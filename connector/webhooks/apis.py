"""Webhooks through the API: endpoints (the secret shown once, when made), deliveries, send again.

Who may call each action is declared in connector/api/access.py. Every query
starts from the caller's organization (TenantAPIViewMixin enters its scope).
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from connector.api.idempotency import idempotent
from connector.api.tenancy import TenantAPIViewMixin, acting_user
from connector.webhooks.models import EventType, WebhookDelivery, WebhookEndpoint
from connector.webhooks.services import (
    webhook_deliveries_redeliver,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_update,
    webhook_secret_rotate,
)


class WebhookEndpointSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices))

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "consecutive_failures",
            "total_failures",
            "last_success_at",
            "last_failure_at",
            "previous_secret_until",
            "created_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "previous_secret_until": {
                "help_text": "After a rotation: until when the replaced secret still signs beside the new one."
            }
        }


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The signing secret (whsec_...). Shown this once: store it now."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointWriteSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices), min_length=1
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class WebhookEndpointPatchSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, required=False)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices), min_length=1, required=False
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(
        required=False, help_text="true enables it again and resets its failures."
    )


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "endpoint",
            "event_id",
            "event_type",
            "state",
            "attempts",
            "next_attempt_at",
            "retry_until",
            "last_status",
            "last_error",
            "created_at",
            "delivered_at",
            "payload",
        ]
        read_only_fields = fields


class RotatedSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(
        help_text="The new signing secret (whsec_...). Shown this once: store it now."
    )
    previous_secret_until = serializers.DateTimeField(
        help_text="Until then every delivery is signed with the new and the replaced secret."
    )


class RedeliverResultSerializer(serializers.Serializer):
    queued = serializers.IntegerField()


@extend_schema(tags=["webhooks"])
class WebhookEndpointListApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = WebhookEndpointSerializer
    filterset_fields = ["enabled"]

    def get_queryset(self):
        return WebhookEndpoint.objects.order_by("created_at")

    # No Idempotency-Key here: a stored answer would keep the secret in clear for a day. A client
    # that lost the answer lists the endpoints and deletes the one it cannot sign for.
    @extend_schema(request=WebhookEndpointWriteSerializer, responses={201: WebhookEndpointCreatedSerializer})
    def post(self, request, tenant_id: str):
        incoming = WebhookEndpointWriteSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(
            tenant=self.tenant, created_by=acting_user(request), **incoming.validated_data
        )
        endpoint.secret = secret
        return Response(WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["webhooks"])
class WebhookEndpointDetailApi(TenantAPIViewMixin, APIView):
    @extend_schema(responses=WebhookEndpointSerializer)
    def get(self, request, tenant_id: str, pk: int):
        return Response(WebhookEndpointSerializer(get_object_or_404(WebhookEndpoint, pk=pk)).data)

    @extend_schema(request=WebhookEndpointPatchSerializer, responses=WebhookEndpointSerializer)
    def patch(self, request, tenant_id: str, pk: int):
        endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
        incoming = WebhookEndpointPatchSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_update(endpoint=endpoint, **incoming.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(responses={204: None})
    def delete(self, request, tenant_id: str, pk: int):
        webhook_endpoint_delete(endpoint=get_object_or_404(WebhookEndpoint, pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["webhooks"])
class WebhookDeliveryListApi(TenantAPIViewMixin, generics.ListAPIView):
    """The delivery log, newest first: filter by endpoint, state or event type."""

    serializer_class = WebhookDeliverySerializer
    filterset_fields = ["endpoint", "state", "event_type", "event_id"]
    ordering_fields = ["created_at"]

    def get_queryset(self):
        return WebhookDelivery.objects.order_by("-created_at", "-pk")


@extend_schema(tags=["webhooks"])
class WebhookRedeliverApi(TenantAPIViewMixin, APIView):
    """Send a delivery again (same event ID, signed anew). Refused while its endpoint is disabled."""

    @extend_schema(request=None, responses={202: RedeliverResultSerializer})
    @idempotent
    def post(self, request, tenant_id: str, pk: int):
        delivery = get_object_or_404(WebhookDelivery.objects.select_related("endpoint"), pk=pk)
        if not delivery.endpoint.enabled:
            raise serializers.ValidationError(
                {
                    "endpoint": "This delivery's endpoint is disabled: enable it again (PATCH enabled=true) first."
                }
            )
        queued, _refused = webhook_deliveries_redeliver(pks=[delivery.pk])
        if not queued:
            raise serializers.ValidationError(
                {"state": "This delivery is being sent right now; look at it again in a minute."}
            )
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["webhooks"])
class WebhookSecretRotateApi(TenantAPIViewMixin, APIView):
    """A new signing secret, shown this once; the replaced one keeps signing beside it for a day."""

    # No Idempotency-Key: a stored answer would keep the secret in clear for a day. A client that
    # lost the answer rotates again (the secret it lost then stops signing after the overlap).
    @extend_schema(request=None, responses={200: RotatedSecretSerializer})
    def post(self, request, tenant_id: str, pk: int):
        endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
        secret = webhook_secret_rotate(endpoint=endpoint)
        return Response({"secret": secret, "previous_secret_until": endpoint.previous_secret_until})
