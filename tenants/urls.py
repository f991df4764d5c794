from django.urls import path

from tenants import views

app_name = "tenants"

urlpatterns = [
    path("", views.home, name="home"),
    path("sign-in/", views.sign_in, name="sign-in"),
    path("sign-in/demo/", views.demo_sign_in, name="demo-sign-in"),
    path("sign-in/refused/", views.sign_in_refused, name="sign-in-refused"),
    path("access-request/", views.access_request_new, name="access-request"),
    path("access-request/<str:status_token>/", views.access_request_status, name="access-request-status"),
    path("portal/", views.portal_home, name="portal-home"),
    path("portal/switch/", views.switch_tenant, name="switch-tenant"),
    path("portal/members/", views.members, name="members"),
    path("portal/members/<int:pk>/role/", views.member_change, name="member-change"),
    path("portal/members/<int:pk>/remove/", views.member_remove, name="member-remove"),
    path(
        "portal/members/invites/<int:pk>/withdraw/",
        views.member_invite_withdraw,
        name="member-invite-withdraw",
    ),
    path("portal/api-tokens/", views.api_tokens, name="api-tokens"),
    path("portal/api-tokens/<int:pk>/revoke/", views.api_token_revoke, name="api-token-revoke"),
]
