from django.urls import path

from connector.visits import apis

P = "tenants/<str:tenant_id>/"
V = P + "visits/<str:public_id>/"

urlpatterns = [
    path(P + "visits/", apis.VisitListApi.as_view(), name="api-visits"),
    path(V, apis.VisitDetailApi.as_view(), name="api-visit"),
    path(V + "events/", apis.VisitEventsApi.as_view(), name="api-visit-events"),
    path(V + "admit/", apis.VisitAdmitApi.as_view(), name="api-visit-admit"),
    path(V + "end/", apis.VisitEndApi.as_view(), name="api-visit-end"),
    path(V + "guest-links/", apis.GuestLinksApi.as_view(), name="api-visit-guest-links"),
    path(
        V + "guest-links/<str:participant_id>/revoke/",
        apis.GuestLinkRevokeApi.as_view(),
        name="api-visit-guest-link-revoke",
    ),
    path(P + "visit-events/", apis.VisitEventFeedApi.as_view(), name="api-visit-event-feed"),
    path(P + "live-status/", apis.LiveStatusApi.as_view(), name="api-live-status"),
]
