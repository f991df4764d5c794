"""Every admin page support staff open answers, across organizations, with search and filters."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.conftest import signed_in

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m._meta.label)
def test_each_changelist_opens_and_searches(client, staff_user, org_a, org_b, admin_a, admin_b, model):
    signed_in(client, staff_user)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert client.get(url).status_code == 200
    model_admin = admin.site._registry[model]
    if model_admin.search_fields:
        assert client.get(url, {"q": "Org A"}).status_code == 200


def test_support_finds_an_organization_by_name_or_tenant_id_in_one_search(client, staff_user, org_a, org_b):
    signed_in(client, staff_user)
    url = reverse("admin:tenants_tenant_changelist")
    by_name = client.get(url, {"q": "Org B"}).content.decode()
    by_id = client.get(url, {"q": org_a.microsoft_tenant_id}).content.decode()
    assert "Org B Clinics" in by_name and "Org A Health" not in by_name
    assert "Org A Health" in by_id and "Org B Clinics" not in by_id


def test_organization_members_cannot_open_the_admin(client, admin_a):
    signed_in(client, admin_a)
    response = client.get(reverse("admin:tenants_tenant_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
