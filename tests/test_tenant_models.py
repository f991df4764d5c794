"""Model rules of organizations and memberships, and the tenant scope itself."""

import pytest
from django.core.exceptions import ValidationError
from django_scopes.exceptions import ScopeError

from tenants.models import (
    ApiToken,
    EhrVendor,
    Membership,
    Role,
    Tenant,
    normalize_microsoft_tenant_id,
    validate_microsoft_tenant_id,
)
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import ORG_A_TID


def _tenant(tid: str) -> Tenant:
    return Tenant(
        name="Some Clinic", microsoft_tenant_id=tid, ehr_vendor=EhrVendor.EPIC, data_region="americas"
    )


@pytest.mark.parametrize(
    "value", ["not-a-guid", "12345", "72f988bf-86f1-41af-91ab", "zzzzzzzz-86f1-41af-91ab-2d7cd011db47"]
)
def test_it_refuses_a_tenant_id_that_is_not_a_guid_and_says_where_to_find_it(value):
    with pytest.raises(ValidationError) as caught:
        validate_microsoft_tenant_id(value)

    message = caught.value.messages[0]
    assert f"{value} is not a Microsoft 365 tenant ID" in message
    assert "Entra admin center" in message
    assert caught.value.code == "invalid_tenant_id"


def test_it_refuses_the_all_zero_guid():
    with pytest.raises(ValidationError, match="all-zero GUID is not a tenant ID"):
        validate_microsoft_tenant_id("00000000-0000-0000-0000-000000000000")


def test_full_clean_reports_a_bad_tenant_id_on_its_field(db):
    tenant = _tenant("contoso.onmicrosoft.com")

    with pytest.raises(ValidationError) as caught:
        tenant.full_clean()

    assert "microsoft_tenant_id" in caught.value.message_dict
    assert "is not a Microsoft 365 tenant ID" in caught.value.message_dict["microsoft_tenant_id"][0]


@pytest.mark.parametrize(
    "given", ["72F988BF-86F1-41AF-91AB-2D7CD011DB47", "72f988bf86f141af91ab2d7cd011db47"]
)
def test_clean_normalizes_the_tenant_id_to_lowercase_dashed_form(db, given):
    tenant = _tenant(given)

    tenant.full_clean()

    assert tenant.microsoft_tenant_id == "72f988bf-86f1-41af-91ab-2d7cd011db47"


def test_normalize_accepts_undashed_and_padded_guids():
    assert (
        normalize_microsoft_tenant_id(" 72F988BF86F141AF91AB2D7CD011DB47 ")
        == "72f988bf-86f1-41af-91ab-2d7cd011db47"
    )


def test_a_valid_tenant_saves_and_is_enabled_only_when_its_status_says_so(db):
    tenant = _tenant(ORG_A_TID)
    tenant.full_clean()
    tenant.save()

    assert tenant.status == "access_requested"
    assert tenant.is_enabled is False
    tenant.status = "enabled"
    assert tenant.is_enabled is True


def test_an_ehr_approver_membership_requires_an_ehr_username(org_a, unscoped):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username="no-ehr-name")
    membership = Membership(tenant=org_a, user=user, role=Role.EHR_APPROVER, ehr_username="   ")

    with pytest.raises(ValidationError) as caught:
        membership.full_clean()

    assert caught.value.message_dict["ehr_username"] == [
        "An EHR approver needs their EHR username, as they sign in to the EHR."
    ]


def test_an_ehr_approver_with_an_ehr_username_and_a_viewer_without_one_are_valid(org_a, unscoped):
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    Membership(
        tenant=org_a, user=users.create_user(username="a1"), role=Role.EHR_APPROVER, ehr_username="ANALYST1"
    ).full_clean()
    Membership(tenant=org_a, user=users.create_user(username="v1"), role=Role.VIEWER).full_clean()


def test_a_query_on_memberships_without_a_tenant_scope_raises_scope_error(admin_a):
    with pytest.raises(ScopeError):
        list(Membership.objects.all())


def test_a_query_on_api_tokens_without_a_tenant_scope_raises_scope_error(org_a, token_client):
    token_client(org_a)

    with pytest.raises(ScopeError):
        ApiToken.objects.filter(name="test token").count()


def test_a_tenant_scope_returns_only_that_tenants_rows(org_a, org_b, admin_a, admin_b, token_client):
    token_client(org_a)
    token_client(org_b)

    with tenant_scope(org_a):
        usernames = {m.user.username for m in Membership.objects.all()}
        token_tenants = {t.tenant_id for t in ApiToken.objects.all()}

    assert usernames == {"alice-admin"}
    assert token_tenants == {org_a.pk}


def test_lifting_the_scope_sees_every_organization(org_a, org_b, admin_a, admin_b):
    with all_tenants():
        assert Membership.objects.count() == 2


def test_a_user_can_hold_one_membership_per_organization(org_a, admin_a):
    from django.db import IntegrityError, transaction

    with tenant_scope(org_a), pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(tenant=org_a, user=admin_a, role=Role.VIEWER)


def test_a_member_of_two_organizations_has_a_role_in_each(org_a, org_b, admin_a):
    with tenant_scope(org_b):
        Membership.objects.create(tenant=org_b, user=admin_a, role=Role.VIEWER)

    with tenant_scope(org_a):
        assert Membership.objects.get(user=admin_a).role == Role.ADMINISTRATOR
    with tenant_scope(org_b):
        assert Membership.objects.get(user=admin_a).role == Role.VIEWER
