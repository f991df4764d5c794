"""Portal pages, under /portal/reports/ (connector/urls.py)."""

from django.urls import path

from reports import views

app_name = "reports"

urlpatterns = [
    path("", views.index, name="index"),
    path("<slug:report_id>/", views.report, name="report"),
]
