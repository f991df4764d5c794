"""SMS notifications: consent, numbers, settings, certificates, appointments, messages, opt-outs."""

from sms.models.appointments import Appointment, AppointmentStatus, ProcessedMessage
from sms.models.messages import MessageKind, MessageState, OptOut, OutboundMessage, PendingDeliveryReport
from sms.models.setup import (
    AppointmentIdField,
    NumberState,
    PhoneNumber,
    SigningCertificate,
    SmsConsent,
    SmsSettings,
    TollFreeVerification,
)

__all__ = [
    "Appointment",
    "AppointmentStatus",
    "MessageKind",
    "MessageState",
    "NumberState",
    "OptOut",
    "OutboundMessage",
    "PendingDeliveryReport",
    "PhoneNumber",
    "ProcessedMessage",
    "SigningCertificate",
    "SmsConsent",
    "SmsSettings",
    "AppointmentIdField",
    "TollFreeVerification",
]
