"""The built-in reports. Importing this package registers them (reports/registry.py)."""

from reports.definitions.sms import SmsReport
from reports.definitions.usage import UsageReport
from reports.definitions.visits import VirtualAppointmentsReport

__all__ = ["SmsReport", "UsageReport", "VirtualAppointmentsReport"]
