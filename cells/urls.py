from django.urls import path

from cells import apis, views

urlpatterns = [
    path("", views.job_list, name="job-list"),
    path("jobs/new/", views.job_create, name="job-create"),
    path("jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/progress/", views.job_progress, name="job-progress"),
    path("jobs/<int:job_id>/delete/", views.job_delete, name="job-delete"),
    path("jobs/<int:job_id>/gallery/", views.job_gallery, name="job-gallery"),
    path("jobs/<int:job_id>/submission.csv", views.job_export, {"export": "submission"}, name="job-submission"),
    path("jobs/<int:job_id>/coco.json", views.job_export, {"export": "coco"}, name="job-coco"),
    path("jobs/<int:job_id>/cells.csv", views.job_export, {"export": "cells"}, name="job-cells-csv"),
    path("jobs/<int:job_id>/labels.zip", views.job_export, {"export": "labels"}, name="job-labels"),
    path("fields/<int:field_id>/", views.field_detail, name="field-detail"),
    path("fields/<int:field_id>/preview.png", views.field_preview, name="field-preview"),
    path("fields/<int:field_id>/images/<slug:kind>.png", views.field_image, name="field-image"),
    path("fields/<int:field_id>/labels/<slug:kind>.png", views.field_labels, name="field-labels"),
    path("fields/<int:field_id>/retry/", views.field_retry, name="field-retry"),
    path("cells/<int:cell_id>/thumbnail.png", views.cell_thumbnail, name="cell-thumbnail"),
    path("accounts/", views.account, name="account"),
    path("accounts/token/", views.account_token, name="account-token"),
]

api_urlpatterns = [
    path("jobs/", apis.JobListCreateApi.as_view(), name="api-job-list"),
    path("jobs/<int:job_id>/", apis.JobDetailApi.as_view(), name="api-job-detail"),
    path("jobs/<int:job_id>/fields/", apis.JobFieldListApi.as_view(), name="api-job-fields"),
    path("jobs/<int:job_id>/cells/", apis.JobCellListApi.as_view(), name="api-job-cells"),
    path("jobs/<int:job_id>/class-counts/", apis.JobClassCountApi.as_view(), name="api-job-class-counts"),
    path("jobs/<int:job_id>/submission.csv", apis.JobSubmissionApi.as_view(), name="api-job-submission"),
    path("jobs/<int:job_id>/coco.json", apis.JobCocoApi.as_view(), name="api-job-coco"),
    path("jobs/<int:job_id>/cells.csv", apis.JobCellsCsvApi.as_view(), name="api-job-cells-csv"),
    path("jobs/<int:job_id>/labels.zip", apis.JobLabelsApi.as_view(), name="api-job-labels"),
    path("fields/<int:field_id>/", apis.FieldDetailApi.as_view(), name="api-field-detail"),
    path("fields/<int:field_id>/cells/", apis.FieldCellListApi.as_view(), name="api-field-cells"),
    path("fields/<int:field_id>/retry/", apis.FieldRetryApi.as_view(), name="api-field-retry"),
    path("fields/<int:field_id>/labels/<slug:kind>.png", apis.FieldLabelsApi.as_view(), name="api-field-labels"),
    path("cells/<int:cell_id>/", apis.CellDetailApi.as_view(), name="api-cell-detail"),
    path("models/", apis.ModelListApi.as_view(), name="api-models"),
]
