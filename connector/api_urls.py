from django.urls import path

from connector import apis

P = "tenants/<str:tenant_id>/"

urlpatterns = [
    path(P + "endpoints/", apis.EndpointListCreateApi.as_view(), name="api-endpoints"),
    path(P + "endpoints/<int:pk>/", apis.EndpointDetailApi.as_view(), name="api-endpoint"),
    path(P + "endpoints/<int:pk>/disable/", apis.EndpointDisableApi.as_view(), name="api-endpoint-disable"),
    path(
        P + "endpoints/<int:pk>/validate/", apis.EndpointValidateApi.as_view(), name="api-endpoint-validate"
    ),
    path(P + "endpoints/<int:pk>/approve/", apis.EndpointApproveApi.as_view(), name="api-endpoint-approve"),
    path(P + "endpoints/<int:pk>/reject/", apis.EndpointRejectApi.as_view(), name="api-endpoint-reject"),
    path(P + "approvals/", apis.ApprovalListApi.as_view(), name="api-approvals"),
    path(P + "ehr-approvers/", apis.ApproversApi.as_view(), name="api-ehr-approvers"),
    path(P + "integration-records/", apis.RecordListApi.as_view(), name="api-records"),
    path(
        P + "integration-records/<int:pk>/rotate-token/",
        apis.RecordRotateTokenApi.as_view(),
        name="api-record-rotate",
    ),
]
