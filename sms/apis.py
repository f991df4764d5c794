"""SMS through the API: numbers, settings, certificates, appointments (phone masked), messages, opt-outs.

Who may call each action is declared in connector/api/access.py.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from connector.api.idempotency import IDEMPOTENCY_HEADER, idempotent
from connector.api.tenancy import TenantAPIViewMixin, acting_user
from connector.models import Environment, FhirEndpoint
from sms.models import (
    Appointment,
    AppointmentIdField,
    OptOut,
    OutboundMessage,
    PhoneNumber,
    SigningCertificate,
    SmsConsent,
    SmsSettings,
)
from sms.services.setup import sms_consent_set, sms_settings_update


class ConsentSerializer(serializers.Serializer):
    on_behalf = serializers.BooleanField()
    patients_consented = serializers.BooleanField()
    on_behalf_confirmed_at = serializers.DateTimeField(read_only=True)
    patient_consent_confirmed_at = serializers.DateTimeField(read_only=True)


class PhoneNumberSerializer(serializers.ModelSerializer):
    class Meta:
        model = PhoneNumber
        fields = [
            "id",
            "number",
            "country",
            "toll_free",
            "state",
            "failure_reason",
            "provider",
            "verification",
            "created_at",
        ]
        read_only_fields = fields


class PhoneNumberRequestSerializer(serializers.Serializer):
    country = serializers.ChoiceField(choices=["US", "CA", "GB"], default="US")
    toll_free = serializers.BooleanField(default=True)


class SmsSettingsSerializer(serializers.ModelSerializer):
    endpoint = serializers.PrimaryKeyRelatedField(read_only=True)
    phone_number = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)  # none chosen yet

    class Meta:
        model = SmsSettings
        fields = [
            "endpoint",
            "phone_number",
            "confirmations_enabled",
            "reminders_enabled",
            "reminder_lead_minutes",
            "quiet_hours_start",
            "quiet_hours_end",
            "default_language",
            "contact",
            "appointment_id_field",
            "phone_region",
            "templates",
        ]


class SmsSettingsWriteSerializer(serializers.Serializer):
    phone_number = serializers.IntegerField(allow_null=True, required=False)
    confirmations_enabled = serializers.BooleanField(default=True)
    reminders_enabled = serializers.BooleanField(default=True)
    reminder_lead_minutes = serializers.ListField(
        child=serializers.IntegerField(min_value=5, max_value=20160), default=[1440, 60]
    )
    quiet_hours_start = serializers.TimeField(default="21:00")
    quiet_hours_end = serializers.TimeField(default="08:00")
    default_language = serializers.ChoiceField(choices=["en", "es"], default="en")
    contact = serializers.CharField(required=False, allow_blank=True, default="")
    appointment_id_field = serializers.ChoiceField(choices=AppointmentIdField.choices, required=False)
    phone_region = serializers.CharField(required=False, allow_blank=True, max_length=2)
    templates = serializers.DictField(
        child=serializers.DictField(child=serializers.CharField(allow_blank=True)), required=False
    )


class CertificateSerializer(serializers.ModelSerializer):
    class Meta:
        model = SigningCertificate
        fields = [
            "id",
            "environment",
            "thumbprint_sha256",
            "thumbprint_sha1",
            "subject",
            "key_description",
            "not_before",
            "not_after",
            "uploaded_at",
            "active",
        ]
        read_only_fields = fields


class CertificateUploadSerializer(serializers.Serializer):
    environment = serializers.ChoiceField(choices=Environment.choices)
    certificate = serializers.CharField(help_text="Base64 PEM text of the X.509 public-key certificate.")


class AppointmentSerializer(serializers.ModelSerializer):
    phone = serializers.SerializerMethodField(help_text="Masked: the last four digits only.")

    class Meta:
        model = Appointment
        fields = [
            "id",
            "external_id",
            "environment",
            "sending_facility",
            "start",
            "end",
            "time_zone",
            "status",
            "department",
            "language",
            "phone",
            "phone_purged_at",
            "endpoint",
        ]
        read_only_fields = fields

    def get_phone(self, obj: Appointment) -> str:
        return "" if obj.phone_purged_at or not obj.phone_last_four else f"…{obj.phone_last_four}"


class MessageSerializer(serializers.ModelSerializer):
    to = serializers.SerializerMethodField(help_text="Masked: the last four digits only.")

    class Meta:
        model = OutboundMessage
        fields = [
            "id",
            "appointment",
            "kind",
            "to",
            "state",
            "send_at",
            "attempts",
            "provider",
            "provider_message_id",
            "error",
            "created_at",
            "sent_at",
            "delivered_at",
        ]
        read_only_fields = fields

    def get_to(self, obj: OutboundMessage) -> str:
        return f"…{obj.to_last_four}"


class OptOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = OptOut
        fields = ["id", "number_last_four", "active", "opted_out_at", "opted_in_at"]
        read_only_fields = fields


@extend_schema(tags=["sms"])
class ConsentApi(TenantAPIViewMixin, APIView):
    def _body(self):
        consent = SmsConsent.objects.filter(tenant=self.tenant).first()
        return {
            "on_behalf": bool(consent and consent.on_behalf_confirmed_at),
            "patients_consented": bool(consent and consent.patient_consent_confirmed_at),
            "on_behalf_confirmed_at": consent.on_behalf_confirmed_at if consent else None,
            "patient_consent_confirmed_at": consent.patient_consent_confirmed_at if consent else None,
        }

    @extend_schema(responses=ConsentSerializer)
    def get(self, request, tenant_id: str):
        return Response(ConsentSerializer(self._body()).data)

    @extend_schema(request=ConsentSerializer, responses=ConsentSerializer)
    def put(self, request, tenant_id: str):
        incoming = ConsentSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        sms_consent_set(tenant=self.tenant, user=request.user, **incoming.validated_data)
        return Response(ConsentSerializer(self._body()).data)


@extend_schema(tags=["sms"])
class PhoneNumberListApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = PhoneNumberSerializer
    filterset_fields = ["state", "verification"]

    def get_queryset(self):
        return PhoneNumber.objects.order_by("-created_at")

    @extend_schema(
        request=PhoneNumberRequestSerializer,
        responses={202: PhoneNumberSerializer},
        parameters=IDEMPOTENCY_HEADER,
    )
    @idempotent
    def post(self, request, tenant_id: str):
        from sms.services.numbers import phone_number_request

        incoming = PhoneNumberRequestSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        number = phone_number_request(
            tenant=self.tenant, requested_by=acting_user(request), **incoming.validated_data
        )
        return Response(PhoneNumberSerializer(number).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["sms"])
class SmsSettingsApi(TenantAPIViewMixin, APIView):
    @extend_schema(responses=SmsSettingsSerializer)
    def get(self, request, tenant_id: str, endpoint_pk: int):
        endpoint = get_object_or_404(FhirEndpoint, pk=endpoint_pk)
        row = get_object_or_404(SmsSettings, endpoint=endpoint)
        return Response(SmsSettingsSerializer(row).data)

    @extend_schema(request=SmsSettingsWriteSerializer, responses=SmsSettingsSerializer)
    def put(self, request, tenant_id: str, endpoint_pk: int):
        endpoint = get_object_or_404(FhirEndpoint.objects.select_related("tenant"), pk=endpoint_pk)
        incoming = SmsSettingsWriteSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = dict(incoming.validated_data)
        number_pk = data.pop("phone_number", None)
        number = get_object_or_404(PhoneNumber, pk=number_pk) if number_pk else None
        row = sms_settings_update(endpoint=endpoint, phone_number=number, **data)
        return Response(SmsSettingsSerializer(row).data)


@extend_schema(tags=["sms"])
class CertificateListApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = CertificateSerializer
    filterset_fields = ["environment", "active"]

    def get_queryset(self):
        return SigningCertificate.objects.order_by("-uploaded_at")

    @extend_schema(
        request=CertificateUploadSerializer,
        responses={201: CertificateSerializer},
        parameters=IDEMPOTENCY_HEADER,
    )
    @idempotent
    def post(self, request, tenant_id: str):
        from sms.services.certificates import certificate_upload

        incoming = CertificateUploadSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        certificate = certificate_upload(
            tenant=self.tenant,
            environment=incoming.validated_data["environment"],
            data=incoming.validated_data["certificate"],
            # An API token acts for the organization, not for a person.
            uploaded_by=acting_user(request),
        )
        return Response(CertificateSerializer(certificate).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["sms"])
class AppointmentListApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = AppointmentSerializer
    filterset_fields = ["status", "department", "endpoint"]
    ordering_fields = ["start"]

    def get_queryset(self):
        return Appointment.objects.order_by("-start")


@extend_schema(tags=["sms"])
class MessageListApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = MessageSerializer
    filterset_fields = ["state", "kind", "appointment"]
    ordering_fields = ["created_at", "send_at"]

    def get_queryset(self):
        return OutboundMessage.objects.order_by("-created_at")


@extend_schema(tags=["sms"])
class OptOutListApi(TenantAPIViewMixin, generics.ListAPIView):
    serializer_class = OptOutSerializer
    filterset_fields = ["active"]

    def get_queryset(self):
        return OptOut.objects.order_by("-opted_out_at")
