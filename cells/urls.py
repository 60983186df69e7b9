from django.urls import include, path

from cells import apis, views

job_urlpatterns = [
    path("", views.job_detail, name="job-detail"),
    path("progress/", views.job_progress, name="job-progress"),
    path("delete/", views.job_delete, name="job-delete"),
    path("gallery/", views.job_gallery, name="job-gallery"),
    path("submission.csv", views.job_export, {"export": "submission"}, name="job-submission"),
    path("coco.json", views.job_export, {"export": "coco"}, name="job-coco"),
    path("cells.csv", views.job_export, {"export": "cells"}, name="job-cells-csv"),
    path("labels.zip", views.job_export, {"export": "labels"}, name="job-labels"),
    path("classify/", views.job_classify, name="job-classify"),
    path("compare/", views.job_compare, name="job-compare"),
]

field_urlpatterns = [
    path("", views.field_detail, name="field-detail"),
    path("preview.jpg", views.field_preview, name="field-preview"),
    path("images/<slug:kind>", views.field_image, name="field-image"),
    path("labels/<slug:kind>.png", views.field_labels, name="field-labels"),
    path("retry/", views.field_retry, name="field-retry"),
]

urlpatterns = [
    path("", views.job_list, name="job-list"),
    path("jobs/new/", views.job_create, name="job-create"),
    path("jobs/<int:job_id>/", include(job_urlpatterns)),
    path("fields/<int:field_id>/", include(field_urlpatterns)),
    path("cells/<int:cell_id>/thumbnail.jpg", views.cell_thumbnail, name="cell-thumbnail"),
    path("models/", views.model_list, name="model-list"),
    path("models/<int:model_id>/", views.model_detail, name="model-detail"),
    path("models/<int:model_id>/default/", views.model_make_default, name="model-default"),
    path("accounts/", views.account, name="account"),
    path("accounts/token/", views.account_token, name="account-token"),
]

api_job_urlpatterns = [
    path("", apis.JobDetailApi.as_view(), name="api-job-detail"),
    path("fields/", apis.JobFieldListApi.as_view(), name="api-job-fields"),
    path("cells/", apis.JobCellListApi.as_view(), name="api-job-cells"),
    path("class-counts/", apis.JobClassCountApi.as_view(), name="api-job-class-counts"),
    path("submission.csv", apis.JobSubmissionApi.as_view(), name="api-job-submission"),
    path("coco.json", apis.JobCocoApi.as_view(), name="api-job-coco"),
    path("cells.csv", apis.JobCellsCsvApi.as_view(), name="api-job-cells-csv"),
    path("labels.zip", apis.JobLabelsApi.as_view(), name="api-job-labels"),
    path("classify/", apis.JobClassifyApi.as_view(), name="api-job-classify"),
    path("compare/", apis.JobCompareApi.as_view(), name="api-job-compare"),
]

api_field_urlpatterns = [
    path("", apis.FieldDetailApi.as_view(), name="api-field-detail"),
    path("cells/", apis.FieldCellListApi.as_view(), name="api-field-cells"),
    path("retry/", apis.FieldRetryApi.as_view(), name="api-field-retry"),
    path("classify/", apis.FieldClassifyApi.as_view(), name="api-field-classify"),
    path("labels/<slug:kind>.png", apis.FieldLabelsApi.as_view(), name="api-field-labels"),
]

api_urlpatterns = [
    path("jobs/", apis.JobListCreateApi.as_view(), name="api-job-list"),
    path("jobs/<int:job_id>/", include(api_job_urlpatterns)),
    path("fields/<int:field_id>/", include(api_field_urlpatterns)),
    path("cells/<int:cell_id>/", apis.CellDetailApi.as_view(), name="api-cell-detail"),
    path("models/", apis.ModelListApi.as_view(), name="api-models"),
    path("models/<int:model_id>/", apis.ModelDetailApi.as_view(), name="api-model-detail"),
    path("models/<int:model_id>/default/", apis.ModelDefaultApi.as_view(), name="api-model-default"),
]
