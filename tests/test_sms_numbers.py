"""Sending numbers: request, provisioning claimed once, failures, toll-free verification, release,
the scheduled tasks. Through the locmem SMS backend (the provider edge)."""

from __future__ import annotations

import pydoc
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from connector.models import FhirEndpoint
from sms import tasks
from sms.backends import AvailableNumber, SmsError, locmem
from sms.backends.locmem import LocmemSmsBackend
from sms.models import NumberState, PhoneNumber, SmsSettings, TollFreeVerification
from sms.schedules import SCHEDULES
from sms.services.numbers import (
    phone_number_refresh_verification,
    phone_number_release,
    phone_number_request,
    phone_number_submit_verification,
)
from tenants.scoping import all_tenants, tenant_scope
from tenants.setup_changes import _move_token

DETAILS = {
    "business_name": "Org A Health",
    "business_website": "https://org-a.example.org",
    "contact_email": "sms-admin@org-a.example.org",
    "contact_phone": "+14155550100",
    "monthly_volume": 2500,
    "use_case": "Appointment confirmations and reminders for video visits.",
    "sample_message": "Org A: reminder, your video visit is on May 1 at 2:00 PM.",
}


@pytest.fixture(autouse=True)
def _locmem_sms(settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    locmem.reset()
    yield
    locmem.reset()


def requested(tenant, user=None, **kwargs) -> PhoneNumber:
    """A request whose task has not run (the on-commit queueing never fires inside a test transaction)."""
    with tenant_scope(tenant):
        return phone_number_request(tenant=tenant, requested_by=user, **kwargs)


def reload(number: PhoneNumber) -> PhoneNumber:
    with all_tenants():
        return PhoneNumber.objects.get(pk=number.pk)


def active(tenant, **kwargs) -> PhoneNumber:
    number = requested(tenant, **kwargs)
    assert tasks.phone_number_provision(number.pk) == NumberState.ACTIVE
    return reload(number)


# --- Request and provisioning ------------------------------------------------------------------


def test_a_request_is_queued_after_commit_and_provisioned(org_a, admin_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, tenant_scope(org_a):
        number = phone_number_request(tenant=org_a, requested_by=admin_a, country="us", toll_free=True)
        assert number.state == NumberState.REQUESTED
        assert locmem.calls == []  # nothing happens before the transaction commits

    # Only the work queued here: the setup-change token (tenants/setup_changes.py) moves on commit too.
    assert len(work_callbacks(callbacks)) == 1
    number = reload(number)
    assert (number.state, number.number, number.provider, number.provider_id) == (
        NumberState.ACTIVE,
        "+18335550100",
        "locmem",
        "locmem-PN1",
    )
    assert number.country == "US" and number.requested_by == admin_a
    assert number.verification == TollFreeVerification.NOT_SUBMITTED
    assert number.failure_reason == ""


def test_a_local_number_needs_no_toll_free_verification(org_a):
    number = requested(org_a, country="US", toll_free=False)
    assert number.verification == TollFreeVerification.NOT_APPLICABLE

    tasks.phone_number_provision(number.pk)

    number = reload(number)
    assert number.number == "+12015550100" and not number.toll_free
    assert number.verification == TollFreeVerification.NOT_APPLICABLE


def test_a_task_delivered_twice_buys_one_number(org_a):
    number = requested(org_a)

    assert tasks.phone_number_provision(number.pk) == NumberState.ACTIVE
    assert tasks.phone_number_provision(number.pk) == NumberState.ACTIVE

    assert len(locmem.purchases) == 1
    assert locmem.calls == ["search_number", "purchase_number"]


def test_a_row_claimed_by_another_worker_is_left_alone(org_a):
    number = requested(org_a)
    with all_tenants():
        PhoneNumber.objects.filter(pk=number.pk).update(
            state=NumberState.PROVISIONING, updated_at=timezone.now()
        )

    assert tasks.phone_number_provision(number.pk) == NumberState.PROVISIONING
    assert locmem.calls == []


def test_a_claim_abandoned_for_fifteen_minutes_is_taken_over(org_a):
    number = requested(org_a)
    with all_tenants():
        PhoneNumber.objects.filter(pk=number.pk).update(
            state=NumberState.PROVISIONING, updated_at=timezone.now() - timedelta(minutes=16)
        )

    assert tasks.phone_number_provision(number.pk) == NumberState.ACTIVE
    assert len(locmem.purchases) == 1


def test_a_permanent_provider_error_fails_the_request_with_a_reason(org_a):
    number = requested(org_a, country="GB")
    LocmemSmsBackend.fail_next = SmsError(
        "Twilio offers no toll-free numbers in GB; choose another country or kind of number.",
        permanent=True,
        code="no_numbers",
    )

    assert tasks.phone_number_provision(number.pk) == NumberState.FAILED

    number = reload(number)
    assert number.failure_reason == (
        "No toll-free number could be obtained from locmem: Twilio offers no toll-free numbers in GB; "
        "choose another country or kind of number."
    )
    assert number.number == "" and locmem.purchases == []
    # A failed request stays failed: a late duplicate of the task does nothing.
    assert tasks.phone_number_provision(number.pk) == NumberState.FAILED
    assert locmem.calls == ["search_number"]


def test_a_temporary_provider_error_leaves_the_request_for_a_retry(org_a):
    number = requested(org_a)
    LocmemSmsBackend.fail_next = SmsError("Twilio had a problem (HTTP 503).", permanent=False)

    with pytest.raises(SmsError):  # raised again, so django-q delivers the task again
        tasks.phone_number_provision(number.pk)

    number = reload(number)
    assert number.state == NumberState.REQUESTED and number.number == ""
    assert "trying again" in number.failure_reason
    assert tasks.phone_number_provision(number.pk) == NumberState.ACTIVE
    assert reload(number).failure_reason == ""


def test_a_purchase_interrupted_before_buying_searches_again(org_a):
    number = requested(org_a)
    LocmemSmsBackend.failures = [
        None,
        SmsError("Read timed out.", permanent=False),
    ]  # search ok, purchase fails

    with pytest.raises(SmsError):
        tasks.phone_number_provision(number.pk)
    assert reload(number).number == "+18335550100"  # remembered: the purchase may have happened

    assert tasks.phone_number_provision(number.pk) == NumberState.ACTIVE
    assert locmem.calls == [
        "search_number",
        "purchase_number",
        "find_number",
        "search_number",
        "purchase_number",
    ]
    assert len(locmem.purchases) == 1


def test_a_purchase_that_went_through_despite_an_error_is_not_bought_again(org_a):
    number = requested(org_a)
    LocmemSmsBackend.failures = [None, SmsError("Read timed out.", permanent=False)]
    with pytest.raises(SmsError):
        tasks.phone_number_provision(number.pk)
    # The provider completed the purchase after the connection dropped.
    LocmemSmsBackend().purchase_number(AvailableNumber("+18335550100", "+18335550100", True))

    assert tasks.phone_number_provision(number.pk) == NumberState.ACTIVE

    number = reload(number)
    assert (number.number, number.provider_id) == ("+18335550100", "locmem-PN1")
    assert len(locmem.purchases) == 1
    assert locmem.calls[-1] == "find_number"


def test_a_deleted_request_is_gone(org_a):
    assert tasks.phone_number_provision(987654) == "gone"


def test_requests_of_two_organizations_get_different_numbers(org_a, org_b):
    a = active(org_a)
    b = active(org_b)

    assert a.number != b.number
    assert (a.tenant_id, b.tenant_id) == (org_a.pk, org_b.pk)


# --- Toll-free verification -----------------------------------------------------------------------


def test_a_toll_free_verification_is_submitted_and_refreshed(org_a):
    number = active(org_a)

    with tenant_scope(org_a):
        number = phone_number_submit_verification(phone_number=number, details=DETAILS)
    assert number.verification == TollFreeVerification.PENDING
    assert reload(number).verification_details == DETAILS
    assert locmem.verification_details["locmem-PN1"] == DETAILS

    with tenant_scope(org_a):
        assert (
            phone_number_refresh_verification(phone_number=number).verification
            == TollFreeVerification.PENDING
        )
    locmem.verifications["locmem-PN1"] = "verified"
    assert tasks.phone_number_refresh_verifications() == 1
    assert reload(number).verification == TollFreeVerification.VERIFIED
    assert not reload(number).held_for_us_recipients


def test_a_verification_cannot_be_submitted_twice_or_for_a_local_number(org_a):
    toll_free = active(org_a)
    local = active(org_a, toll_free=False)

    with tenant_scope(org_a):
        phone_number_submit_verification(phone_number=toll_free, details=DETAILS)
        with pytest.raises(ValidationError, match="already pending"):
            phone_number_submit_verification(phone_number=toll_free, details=DETAILS)
        with pytest.raises(ValidationError, match="Only toll-free"):
            phone_number_submit_verification(phone_number=local, details=DETAILS)


def test_a_refused_verification_is_a_validation_error_with_the_providers_reason(org_a):
    number = active(org_a)
    LocmemSmsBackend.fail_next = SmsError(
        "Twilio needs these for a toll-free verification: opt_in_image_urls.",
        permanent=True,
        code="invalid_details",
    )

    with tenant_scope(org_a), pytest.raises(ValidationError, match="opt_in_image_urls"):
        phone_number_submit_verification(phone_number=number, details=DETAILS)

    assert reload(number).verification == TollFreeVerification.NOT_SUBMITTED


def test_one_failing_refresh_does_not_stop_the_others(org_a, org_b):
    first, second = active(org_a), active(org_b)
    for number in (first, second):
        with tenant_scope(number.tenant):
            phone_number_submit_verification(phone_number=number, details=DETAILS)
    locmem.verifications["locmem-PN2"] = "rejected"
    LocmemSmsBackend.fail_next = SmsError("Twilio is down.", permanent=False)

    assert tasks.phone_number_refresh_verifications() == 1

    assert reload(second).verification == TollFreeVerification.REJECTED
    assert reload(first).verification == TollFreeVerification.PENDING


def test_verifications_decided_in_the_providers_portal_are_left_as_recorded(settings, org_a):
    with tenant_scope(org_a):
        number = PhoneNumber.objects.create(
            tenant=org_a,
            number="+18335550177",
            provider="acs",
            provider_id="+18335550177",
            state=NumberState.ACTIVE,
            verification=TollFreeVerification.PENDING,
        )
    settings.SMS_BACKEND = "sms.backends.acs.AcsSmsBackend"

    assert tasks.phone_number_refresh_verifications() == 0
    assert reload(number).verification == TollFreeVerification.PENDING


# --- Release ----------------------------------------------------------------------------------------


def link(number: PhoneNumber) -> SmsSettings:
    with tenant_scope(number.tenant):
        endpoint = FhirEndpoint.objects.create(
            tenant=number.tenant,
            base_url="https://fhir.example.org/api/FHIR/R4",
            environment="test",
            label="Main campus",
        )
        return SmsSettings.objects.create(tenant=number.tenant, endpoint=endpoint, phone_number=number)


def test_a_number_in_use_is_not_released(org_a):
    number = active(org_a)
    row = link(number)

    with tenant_scope(org_a), pytest.raises(ValidationError) as refused:
        phone_number_release(phone_number=number)

    assert "still sends the texts of Main campus" in refused.value.messages[0]
    assert "choose another number for that endpoint first" in refused.value.messages[0]
    assert "release_number" not in locmem.calls
    assert reload(number).state == NumberState.ACTIVE

    with tenant_scope(org_a):
        SmsSettings.objects.filter(pk=row.pk).update(phone_number=None)
        released = phone_number_release(phone_number=number)
    assert released.state == NumberState.RELEASED and released.number == ""
    assert locmem.numbers["locmem-PN1"].released


def test_a_request_not_yet_provisioned_is_withdrawn_without_the_provider(org_a):
    number = requested(org_a)

    with tenant_scope(org_a):
        assert phone_number_release(phone_number=number).state == NumberState.RELEASED

    assert tasks.phone_number_provision(number.pk) == NumberState.RELEASED  # the late task buys nothing
    assert locmem.calls == []


def test_a_number_being_provisioned_is_not_released(org_a):
    number = requested(org_a)
    with all_tenants():
        PhoneNumber.objects.filter(pk=number.pk).update(state=NumberState.PROVISIONING)

    with tenant_scope(org_a), pytest.raises(ValidationError, match="being obtained"):
        phone_number_release(phone_number=reload(number))


def test_a_number_from_another_provider_is_not_released_through_this_one(org_a):
    with tenant_scope(org_a):
        number = PhoneNumber.objects.create(
            tenant=org_a,
            number="+18335550177",
            provider="twilio",
            provider_id="PN1",
            state=NumberState.ACTIVE,
        )

        with pytest.raises(ValidationError, match="obtained from twilio"):
            phone_number_release(phone_number=number)


def test_a_provider_refusing_the_release_is_a_validation_error(org_a):
    number = active(org_a)
    LocmemSmsBackend.fail_next = SmsError("Twilio is down.", permanent=False)

    with tenant_scope(org_a), pytest.raises(ValidationError, match="did not release"):
        phone_number_release(phone_number=number)

    assert reload(number).state == NumberState.ACTIVE


# --- Scheduled tasks -------------------------------------------------------------------------------


def test_stalled_requests_of_every_organization_are_queued_again(org_a, org_b):
    fresh = requested(org_a)
    old = requested(org_a)
    abandoned = requested(org_b)
    with all_tenants():
        PhoneNumber.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(hours=1))
        PhoneNumber.objects.filter(pk=abandoned.pk).update(
            state=NumberState.PROVISIONING, updated_at=timezone.now() - timedelta(minutes=20)
        )

    assert tasks.phone_numbers_provision_stalled() == 2  # tasks run inline in the test suite

    assert reload(old).state == NumberState.ACTIVE
    assert reload(abandoned).state == NumberState.ACTIVE
    assert reload(fresh).state == NumberState.REQUESTED  # its own task is still on its way


def test_the_number_schedules_name_importable_tasks():
    by_func = {spec["func"]: spec for spec in SCHEDULES}

    assert by_func["sms.tasks.phone_number_refresh_verifications"]["schedule_type"] == "H"  # hourly
    # Stalled requests are queued again by the one sweeper (connector/sweeper.py).
    assert "sms.tasks.phone_numbers_provision_stalled" not in by_func
    for spec in SCHEDULES:
        assert callable(pydoc.locate(spec["func"]))


def work_callbacks(callbacks):
    return [callback for callback in callbacks if callback is not _move_token]
