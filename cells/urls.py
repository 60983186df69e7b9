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
    path("features.csv", views.job_export, {"export": "features"}, name="job-features-csv"),
    path("features.parquet", views.job_export, {"export": "features-parquet"}, name="job-features-parquet"),
    path("all.zip", views.job_archive, name="job-archive"),
    path("crops.zip", views.job_crops, name="job-crops"),
    path("classify/", views.job_classify, name="job-classify"),
    path("compare/", views.job_compare, name="job-compare"),
    path("summary.csv", views.job_summary_csv, name="job-summary-csv"),
    path("annotations/", views.job_annotations, name="job-annotations"),
    path("annotations.csv", views.job_annotations_csv, name="job-annotations-csv"),
]

field_urlpatterns = [
    path("", views.field_detail, name="field-detail"),
    path("preview.jpg", views.field_preview, name="field-preview"),
    path("images/<slug:kind>", views.field_image, name="field-image"),
    path("labels/<slug:kind>.png", views.field_labels, name="field-labels"),
    path("cells.csv", views.field_cells_csv, name="field-cells-csv"),
    path("retry/", views.field_retry, name="field-retry"),
]

urlpatterns = [
    path("", views.job_list, name="job-list"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("jobs/new/", views.job_create, name="job-create"),
    path("jobs/<int:job_id>/", include(job_urlpatterns)),
    path("fields/<int:field_id>/", include(field_urlpatterns)),
    path("cells/<int:cell_id>/thumbnail.jpg", views.cell_thumbnail, name="cell-thumbnail"),
    path("annotations/<int:annotation_id>/undo/", views.annotation_undo, name="annotation-undo"),
    path("training/", views.training_list, name="training-list"),
    path("training/<int:training_job_id>/", views.training_detail, name="training-detail"),
    path("training/<int:training_job_id>/cancel/", views.training_cancel, name="training-cancel"),
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
    path("features.csv", apis.JobFeaturesCsvApi.as_view(), name="api-job-features-csv"),
    path("features.parquet", apis.JobFeaturesParquetApi.as_view(), name="api-job-features-parquet"),
    path("crops.zip", apis.JobCropsApi.as_view(), name="api-job-crops"),
    path("all.zip", apis.JobArchiveApi.as_view(), name="api-job-archive"),
    path("classify/", apis.JobClassifyApi.as_view(), name="api-job-classify"),
    path("compare/", apis.JobCompareApi.as_view(), name="api-job-compare"),
    path("summary/", apis.JobSummaryApi.as_view(), name="api-job-summary"),
    path("summary.csv", apis.JobSummaryCsvApi.as_view(), name="api-job-summary-csv"),
    path("annotations/", apis.JobAnnotationListApi.as_view(), name="api-job-annotations"),
    path("annotations.csv", apis.JobAnnotationsCsvApi.as_view(), name="api-job-annotations-csv"),
    path("annotations/import/", apis.JobAnnotationImportApi.as_view(), name="api-job-annotations-import"),
]

api_field_urlpatterns = [
    path("", apis.FieldDetailApi.as_view(), name="api-field-detail"),
    path("cells/", apis.FieldCellListApi.as_view(), name="api-field-cells"),
    path("retry/", apis.FieldRetryApi.as_view(), name="api-field-retry"),
    path("classify/", apis.FieldClassifyApi.as_view(), name="api-field-classify"),
    path("labels/<slug:kind>.png", apis.FieldLabelsApi.as_view(), name="api-field-labels"),
    path("mask-edits/", apis.FieldMaskEditListApi.as_view(), name="api-field-mask-edits"),
]

api_urlpatterns = [
    path("jobs/", apis.JobListCreateApi.as_view(), name="api-job-list"),
    path("jobs/<int:job_id>/", include(api_job_urlpatterns)),
    path("fields/<int:field_id>/", include(api_field_urlpatterns)),
    path("cells/<int:cell_id>/", apis.CellDetailApi.as_view(), name="api-cell-detail"),
    path("cells/<int:cell_id>/annotations/", apis.CellAnnotationApi.as_view(), name="api-cell-annotations"),
    path("cells/<int:cell_id>/mask/delete/", apis.CellMaskDeleteApi.as_view(), name="api-cell-mask-delete"),
    path("cells/<int:cell_id>/mask/merge/", apis.CellMaskMergeApi.as_view(), name="api-cell-mask-merge"),
    path("cells/<int:cell_id>/mask/split/", apis.CellMaskSplitApi.as_view(), name="api-cell-mask-split"),
    path("annotations/<int:annotation_id>/undo/", apis.AnnotationUndoApi.as_view(), name="api-annotation-undo"),
    path("mask-edits/<int:edit_id>/undo/", apis.MaskEditUndoApi.as_view(), name="api-mask-edit-undo"),
    path("training-jobs/", apis.TrainingJobListCreateApi.as_view(), name="api-training-jobs"),
    path("training-jobs/<int:training_job_id>/", apis.TrainingJobDetailApi.as_view(), name="api-training-job"),
    path(
        "training-jobs/<int:training_job_id>/cancel/",
        apis.TrainingJobCancelApi.as_view(),
        name="api-training-job-cancel",
    ),
    path("models/", apis.ModelListApi.as_view(), name="api-models"),
    path("models/<int:model_id>/", apis.ModelDetailApi.as_view(), name="api-model-detail"),
    path("models/<int:model_id>/default/", apis.ModelDefaultApi.as_view(), name="api-model-default"),
]
