"""Notifications go through the real django-q2 broker (ORM, or Redis when REDIS_URL is set)."""

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django_q.brokers import get_broker

from tenants import services
from tenants.models import AccessRequestState
from tenants.setup_changes import _move_token


@pytest.mark.tasks
def test_approving_queues_the_notification_after_commit_and_a_worker_sends_it(
    db, staff_user, drain_task_queue, django_capture_on_commit_callbacks
):
    requester = get_user_model().objects.create_user(username="ravi", email="ravi@newclinic.example")
    access_request = services.access_request_create(
        requested_by=requester,
        requester_email=requester.email,
        organization_name="New Clinic",
        microsoft_tenant_id="33333333-3333-4333-8333-333333333333",
        ehr_vendor="epic",
        data_region="europe",
        technical_contact_email="ehr-team@newclinic.example",
    )

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.access_request_approve(access_request=access_request, reviewed_by=staff_user)
        assert get_broker().queue_size() == 0  # nothing is queued inside the transaction

    # Only the work queued here: the setup-change token (tenants/setup_changes.py) moves on commit too.
    assert len(work_callbacks(callbacks)) == 1
    assert get_broker().queue_size() == 1
    assert mail.outbox == []  # queued, not run inline

    ran = drain_task_queue()

    assert ran == [("tenants.tasks.notify_access_request_decision", (access_request.pk,), True)]
    assert get_broker().queue_size() == 0
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Access approved for New Clinic"
    assert sorted(mail.outbox[0].to) == ["ehr-team@newclinic.example", "ravi@newclinic.example"]
    access_request.refresh_from_db()
    assert access_request.state == AccessRequestState.APPROVED


@pytest.mark.tasks
def test_the_notification_task_is_safe_to_run_again(
    db, staff_user, drain_task_queue, django_capture_on_commit_callbacks
):
    from tenants.tasks import notify_access_request_decision

    access_request = services.access_request_create(
        requested_by=None,
        requester_email="nia@newclinic.example",
        organization_name="New Clinic",
        microsoft_tenant_id="33333333-3333-4333-8333-333333333333",
        ehr_vendor="epic",
        data_region="europe",
        technical_contact_email="nia@newclinic.example",
    )
    assert notify_access_request_decision(access_request.pk) is False  # still open: nothing to say
    with django_capture_on_commit_callbacks(execute=True):
        services.access_request_reject(
            access_request=access_request, reviewed_by=staff_user, reason="Not eligible."
        )

    drain_task_queue()
    assert notify_access_request_decision(access_request.pk) is True  # a retry sends the same message

    assert [m.to for m in mail.outbox] == [["nia@newclinic.example"], ["nia@newclinic.example"]]
    assert notify_access_request_decision(999_999) is False


def work_callbacks(callbacks):
    return [callback for callback in callbacks if callback is not _move_token]
