from django.urls import path

from reports import apis

P = "tenants/<str:tenant_id>/reports/"

urlpatterns = [
    path(P, apis.ReportListApi.as_view(), name="api-reports"),
    path(P + "<slug:report_id>/", apis.ReportApi.as_view(), name="api-report"),
]
