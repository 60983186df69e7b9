"""Pages and htmx partials. Views parse the request, call one service or selector, render.

Every stored file (channels, viewer images, thumbnails, label images, exports) is served by a
view here that checks the signed-in user owns it; MEDIA_URL is never exposed.
"""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, HttpResponsePermanentRedirect, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from cells import curation, exports, intake, registry, selectors, throttles, training_jobs
from cells.forms import (
    CropsExportForm,
    GalleryFilterForm,
    JobUploadForm,
    ModelImportForm,
    SegmenterImportForm,
    TrainingJobForm,
)
from cells.image_labels import labels_from_request
from cells.models import FieldImage
from cells.upload_limits import DISK_FULL, is_disk_full
from cells.uploads import BARE_CHANNEL_FILE_PATTERN, JobInputError, request_uploads
from ml.constants import CHANNELS, CLASS_NAMES, REQUIRED_CHANNELS
from ml.io import FIELD_FILE_PATTERN

GALLERY_PAGE_SIZE = 48
SEGMENTER_FORM_PREFIX = "segmenter"
# What upload.js needs to assign dropped files to fields as the server will.
UPLOAD_PAGE_DATA = {
    "fieldFilePattern": FIELD_FILE_PATTERN,
    "bareChannelFilePattern": BARE_CHANNEL_FILE_PATTERN,
    "channels": list(CHANNELS),
    "requiredChannels": list(REQUIRED_CHANNELS),
}


@login_required
def job_list(request):
    jobs = [(job, selectors.job_progress(job=job)) for job in selectors.job_list(user=request.user)]
    return render(request, "cells/job_list.html", {"jobs": jobs})


@login_required
def job_create(request):
    if request.method == "POST":
        wait_s = throttles.page_wait_s(request, throttles.JobCreateUserThrottle, throttles.JobCreateAddressThrottle)
        if wait_s is not None:
            minutes = max(1, round(wait_s / 60))
            messages.error(request, f"Too many uploads in a short time; try again in about {minutes} minute(s).")
            response = render(
                request,
                "cells/job_create.html",
                {"form": JobUploadForm(user=request.user), "upload_errors": {}, "upload_page": UPLOAD_PAGE_DATA},
                status=429,
            )
            response["Retry-After"] = str(int(wait_s))
            return response
    form = JobUploadForm(request.POST or None, request.FILES or None, user=request.user)
    errors: dict[str, str] = {}
    status = 200
    if getattr(request, "upload_error", ""):  # the body could not be parsed (cells.upload_limits)
        errors, status = {"upload": request.upload_error}, 400
    elif request.method == "POST" and form.is_valid():
        try:
            with request_uploads(
                request.FILES,
                field_name=form.cleaned_data["field_name"],
                assignments=form.cleaned_data["assignments"],
                paths=form.cleaned_data["paths"],
            ) as uploads:
                job = intake.job_create(
                    owner=request.user,
                    uploads=uploads,
                    name=form.cleaned_data["name"],
                    segmentation_backend=form.cleaned_data["segmentation_backend"],
                    classifier_id=form.cleaned_data["classifier"].pk if form.cleaned_data["classifier"] else None,
                    # "None: segment only" chosen; a form without the field gets the default.
                    classify=bool(form.cleaned_data["classifier"]) or "classifier" not in request.POST,
                    image_labels=labels_from_request(request.FILES, typed=form.cleaned_data["labels"]),
                    pixel_size_um=form.cleaned_data.get("pixel_size_um"),
                    nucleus_diameter_px=form.cleaned_data.get("nucleus_diameter_px"),
                    channel_mapping=form.cleaned_data.get("channel_mapping") or None,
                )
        except JobInputError as exc:
            errors, status = exc.field_errors, 400
        except intake.QueueUnavailable as exc:
            errors, status = {"upload": str(exc)}, 503
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            errors, status = {"upload": DISK_FULL}, 507
        else:
            count = job.fields.count()
            messages.success(request, f"Upload accepted; {count} field{'s' if count != 1 else ''} queued.")
            if request.htmx:
                return HttpResponseClientRedirect(job.get_absolute_url())
            return redirect(job.get_absolute_url())
    if form.errors and status == 200:
        status = 400
    context = {"form": form, "upload_errors": errors}
    if request.htmx:
        return render(request, "cells/_upload_errors.html", context, status=status)
    return render(request, "cells/job_create.html", {**context, "upload_page": UPLOAD_PAGE_DATA}, status=status)


@login_required
def job_detail(request, job_id: int):
    job = selectors.job_get(user=request.user, job_id=job_id)
    context = {
        "job": job,
        "progress": selectors.job_progress(job=job),
        "fields": selectors.field_list(user=request.user, job=job),
        "classifiers": registry.classifiers_for(request.user),
        "job_models": selectors.job_models(job=job),
        "summary": selectors.job_summary(job=job),
    }
    return render(request, "cells/job_detail.html", context)


@login_required
def job_summary_csv(request, job_id: int):
    job = selectors.job_get(user=request.user, job_id=job_id)
    return exports.job_summary_response(job=job)


@login_required
def job_progress(request, job_id: int):
    job = selectors.job_get(user=request.user, job_id=job_id)
    progress = selectors.job_progress(job=job)
    context = {"job": job, "progress": progress, "fields": selectors.field_list(user=request.user, job=job)}
    response = render(request, "cells/_job_progress.html", context)
    if progress.is_finished and request.htmx:
        # Reload once so the finished page shows results and the polling stops.
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
def job_delete(request, job_id: int):
    job = selectors.job_get(user=request.user, job_id=job_id)
    name = str(job)
    intake.job_delete(job=job)
    messages.info(request, f"{name} and all its files were deleted.")
    return redirect("job-list")


@login_required
def job_gallery(request, job_id: int):
    job = selectors.job_get(user=request.user, job_id=job_id)
    form = GalleryFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else GalleryFilterForm.defaults()
    classified = selectors.job_is_classified(job=job)
    if not classified:
        # Without predictions there is nothing to filter on: show every crop.
        filters = {**filters, "class_index": None, "min_confidence": None}
    cells = _gallery_cells(user=request.user, job=job, filters=filters)
    page = Paginator(cells, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    counts = selectors.class_counts(job=job, min_confidence=filters["min_confidence"] or 0.0) if classified else []
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "job": job,
        "form": form,
        "filters": filters,
        "classified": classified,
        "page": page,
        "tiles": [(cell, selectors.cell_top_classes(cell, limit=3)) for cell in page],
        "counts": counts,
        "max_count": max([count.cells for count in counts] + [1]),
        "query": query.urlencode(),
        # The same cells' crops: job_crops reads the gallery's filters (its minimum confidence made explicit).
        "crops_query": urlencode(
            {
                **{key: value for key, value in query.items() if key != "image_format"},
                "min_confidence": filters["min_confidence"],
            }
            if filters["min_confidence"] is not None
            else {key: value for key, value in query.items() if key not in ("image_format", "min_confidence")}
        ),
        "class_name": CLASS_NAMES[filters["class_index"]] if filters["class_index"] is not None else None,
        "class_names": CLASS_NAMES,
    }
    return render(request, "cells/job_gallery.html", context)


@login_required
def job_export(request, job_id: int, export: str):
    job = selectors.job_get(user=request.user, job_id=job_id)
    options = {}
    if export == "submission" and request.GET.get("exclude_qc"):
        try:
            options["exclude_qc"] = exports.parse_exclude_qc(request.GET["exclude_qc"])
        except ValueError as error:
            return HttpResponse(f"The submission could not be made: {error}", status=400, content_type="text/plain")
    return exports.export_response(job=job, export=export, **options)


@login_required
def job_archive(request, job_id: int):
    """One zip of everything the job produced."""
    job = selectors.job_get(user=request.user, job_id=job_id)
    return exports.job_zip_response(job=job)


def _gallery_cells(*, user, job, filters: dict, field=None):
    """The cells the gallery's filters keep (GalleryFilterForm's cleaned data), of one field when given."""
    cells = selectors.cell_list(
        user=user,
        job=job,
        field=field,
        class_index=filters["class_index"],
        min_confidence=filters["min_confidence"],
        unfamiliar={"unfamiliar": True, "familiar": False}.get(filters.get("familiarity") or ""),
        qc=filters.get("qc") or None,
        order=filters["order"],
    )
    if filters.get("field_labels"):
        cells = selectors.cells_by_field_labels(
            cells, shows=filters["field_labels"] == "shows", min_confidence=filters["min_confidence"] or 0.0
        )
    return cells


@login_required
def job_crops(request, job_id: int):
    """The crops (all four channels, PNG or TIFF) of the cells the gallery's filters, a field or a list of cells
    choose. `cells` are cell numbers of `field` when a field is given, else cell ids; without
    `min_confidence` no confidence is required (the gallery's own default is not applied)."""
    job = selectors.job_get(user=request.user, job_id=job_id)
    form = CropsExportForm(request.GET)
    gallery = GalleryFilterForm(request.GET)
    if not form.is_valid() or not gallery.is_valid():
        reasons = " ".join(error for errors in (*form.errors.values(), *gallery.errors.values()) for error in errors)
        return HttpResponse(f"The crops could not be chosen: {reasons}", status=400, content_type="text/plain")
    choice = form.cleaned_data
    filters = {**gallery.cleaned_data, "min_confidence": choice["min_confidence"]}
    field = selectors.field_get(user=request.user, field_id=choice["field"]) if choice["field"] else None
    if field is not None and field.job_id != job.pk:
        raise Http404("No such field in this job.")
    cells = _gallery_cells(user=request.user, job=job, filters=filters, field=field)
    if choice["cells"]:
        cells = cells.filter(**{"label__in" if field else "pk__in": choice["cells"]})
    name = f"{field.name}-crops" if field else "crops"
    return exports.crops_response(job=job, cells=cells, image_format=choice["image_format"], name=name)


@login_required
def field_cells_csv(request, field_id: int):
    field = selectors.field_get(user=request.user, field_id=field_id)
    return exports.field_cells_csv_response(field=field)


def favicon(request):
    """Browsers ask for /favicon.ico whatever the page links; the icon is a static SVG."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


@login_required
def field_detail(request, field_id: int):
    field = selectors.field_get(user=request.user, field_id=field_id)
    previous_field, next_field = selectors.field_neighbours(field=field)
    cells = [(cell, selectors.cell_top_classes(cell)) for cell in selectors.cell_list(user=request.user, field=field)]
    images = {image.kind: image for image in field.images.all()}
    version = field.finished_at.timestamp() if field.finished_at else 0
    # A field's own pixel size where it has one, else its job's; None: the scale bar counts pixels.
    pixel_size_um = getattr(field, "pixel_size_um", None) or getattr(field.job, "pixel_size_um", None)
    context = {
        "field": field,
        "cells": cells,
        "images": images,
        "channels": [(channel, channel in images) for channel in CHANNELS],
        "pixel_size_um": pixel_size_um,
        "field_prediction": selectors.field_top_classes(field=field),
        "class_choices": list(enumerate(CLASS_NAMES)),
        "viewer": {
            "width": field.width,
            "height": field.height,
            "pixelSizeUm": pixel_size_um,
            "classNames": list(CLASS_NAMES),
            "model": (
                {
                    "name": field.classifier.name,
                    "version": field.classifier.version,
                    "summary": field.classifier.summary,
                }
                if field.classifier
                else None
            ),
            "cells": selectors.viewer_cells(field=field),
            # ?v= changes when the field is run again, so browsers never mix old and new pictures.
            "images": {kind: f"{reverse('field-image', args=[field.pk, kind])}?v={version:.0f}" for kind in images},
            "thumbnailUrl": reverse("cell-thumbnail", args=[0]).replace("/0/", "/{id}/") + f"?v={version:.0f}",
        },
        "previous_field": previous_field,
        "next_field": next_field,
        "class_names": CLASS_NAMES,
    }
    return render(request, "cells/field_detail.html", context)


@login_required
def field_preview(request, field_id: int):
    field = selectors.field_get(user=request.user, field_id=field_id)
    if not field.preview:
        return HttpResponse("This field has no preview yet.", status=404, content_type="text/plain")
    return _private_file(field.preview, content_type="image/jpeg")


@login_required
def field_image(request, field_id: int, kind: str):
    if kind not in FieldImage.Kind.values:
        raise Http404("No such viewer image.")
    image = selectors.field_image_get(user=request.user, field_id=field_id, kind=kind)
    return _private_file(image.file, content_type="image/jpeg" if image.file.name.endswith(".jpg") else "image/png")


@login_required
def field_labels(request, field_id: int, kind: str):
    field, stored = selectors.field_labels_get(user=request.user, field_id=field_id, kind=kind)
    return _private_file(stored, content_type="image/png", download_name=f"{field.name}_{kind}.png")


@login_required
@require_POST
def field_retry(request, field_id: int):
    field = selectors.field_get(user=request.user, field_id=field_id)
    try:
        intake.field_retry(field=field)
    except ValidationError as exc:
        # A second click on "Run again", or a field that was already retried elsewhere.
        messages.error(request, f"Field {field.name} was not queued again: {' '.join(exc.messages)}")
    except intake.QueueUnavailable as exc:
        messages.error(request, f"Field {field.name} was not queued again: {exc}")
    else:
        messages.info(request, f"Field {field.name} is queued again.")
    return redirect("job-detail", job_id=field.job_id)


@login_required
def cell_thumbnail(request, cell_id: int):
    cell = selectors.cell_get(user=request.user, cell_id=cell_id)
    if not cell.thumbnail:
        raise Http404("This cell has no thumbnail.")
    return _private_file(cell.thumbnail, content_type="image/jpeg")


@login_required
def account(request):
    return render(request, "cells/account.html", {"token": selectors.api_token_get(user=request.user)})


@login_required
@require_POST
def account_token(request):
    token, key = intake.api_token_regenerate(user=request.user)
    # Only the key's hash is stored: this response is the one time it can be shown.
    context = {"token": token, "new_key": key}
    response = render(request, "cells/account.html", context)
    response["Cache-Control"] = "no-store"
    return response


def login_locked_out(request, original_response=None, credentials=None) -> HttpResponse:
    """django-axes' answer to a locked-out sign-in: 429 with Retry-After, the page says how long."""
    wait_s = int(settings.AXES_COOLOFF_TIME.total_seconds())
    response = render(request, "registration/locked_out.html", {"minutes": max(1, round(wait_s / 60))}, status=429)
    response["Retry-After"] = str(wait_s)
    return response


def _private_file(stored, *, content_type: str, download_name: str | None = None) -> FileResponse:
    response = FileResponse(
        stored.open("rb"),
        content_type=content_type,
        as_attachment=download_name is not None,
        filename=download_name or "",
    )
    # Owner-only content: browsers may keep it, shared caches may not.
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_POST
def job_classify(request, job_id: int):
    job = selectors.job_get(user=request.user, job_id=job_id)
    try:
        model = selectors.model_get(user=request.user, model_id=int(request.POST.get("classifier", "")))
        intake.job_classify(job=job, classifier=model, user=request.user)
    except ValueError:
        messages.error(request, "Choose a classifier to run the job with.")
    except ValidationError as exc:
        messages.error(request, f"{job} was not run again: {' '.join(exc.messages)}")
    else:
        messages.info(request, f"{job} is running with {model.label}; the earlier predictions are kept.")
    return redirect(job.get_absolute_url())


@login_required
def job_compare(request, job_id: int):
    job = selectors.job_get(user=request.user, job_id=job_id)
    models = selectors.job_models(job=job)
    chosen = []
    for key, fallback in (("first", 0), ("second", 1)):
        try:
            chosen.append(selectors.model_get(user=request.user, model_id=int(request.GET[key])))
        except (KeyError, ValueError):
            chosen.append(models[fallback] if len(models) > fallback else None)
    if None in chosen or chosen[0] == chosen[1]:
        messages.info(request, "Run the job with a second classifier first; then the two can be compared.")
        return redirect(job.get_absolute_url())
    comparison = selectors.model_comparison(job=job, first=chosen[0], second=chosen[1])
    shown_ids = comparison.disagreeing_cell_ids[:GALLERY_PAGE_SIZE]
    by_id = {cell.pk: cell for cell in selectors.cell_list(user=request.user, job=job).filter(pk__in=shown_ids)}
    calls = selectors.cell_calls(cell_ids=shown_ids, models=chosen)
    context = {
        "job": job,
        "models": models,
        "comparison": comparison,
        "disagreeing": [(by_id[cell_id], *calls[cell_id]) for cell_id in shown_ids if cell_id in by_id],
    }
    return render(request, "cells/job_compare.html", context)


@login_required
def model_list(request):
    """The models page; it imports a classifier (`form`) or a segmentation package pair (`segmenter_form`)."""
    posted_segmenter = request.method == "POST" and f"{SEGMENTER_FORM_PREFIX}-visibility" in request.POST
    form = ModelImportForm(request.POST or None, request.FILES or None) if not posted_segmenter else ModelImportForm()
    segmenter_form = SegmenterImportForm(
        *((request.POST, request.FILES) if posted_segmenter else ()), prefix=SEGMENTER_FORM_PREFIX
    )
    can_import = request.user.is_staff or settings.HPAWEB_PRIVATE_MODELS
    if not request.user.is_staff:
        for visibility in (form.fields["visibility"], segmenter_form.fields["visibility"]):
            visibility.choices = [("private", "Private (you only)")]
    status = 200
    posted = segmenter_form if posted_segmenter else form
    if request.method == "POST" and can_import and posted.is_valid():
        data = posted.cleaned_data
        try:
            if posted_segmenter:
                model = registry.segmenter_import(
                    owner=request.user,
                    nuclei_upload=data["nuclei_file"],
                    cell_upload=data["cell_file"],
                    visibility=data["visibility"],
                    name=data["name"],
                )
            else:
                model = registry.model_import(
                    owner=request.user,
                    upload=data["file"],
                    visibility=data["visibility"],
                    class_mapping=registry.parse_class_mapping(data["class_mapping"]),
                )
        except (ValidationError, PermissionDenied) as exc:
            # A pair's refusal names which of its two packages was refused.
            posted.add_error(
                None if posted_segmenter else "file",
                " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc),
            )
            status = 400
        else:
            messages.success(request, f"{model.label} was checked and added.")
            return redirect(model.get_absolute_url())
    elif request.method == "POST":
        status = 400
    context = {
        "models": selectors.model_list(user=request.user),
        "form": form,
        "segmenter_form": segmenter_form,
        "can_import": can_import,
    }
    return render(request, "cells/model_list.html", context, status=status)


@login_required
def model_detail(request, model_id: int):
    model = selectors.model_get(user=request.user, model_id=model_id)
    return render(request, "cells/model_detail.html", {"model": model, "ap_bars": selectors.model_ap_bars(model=model)})


@login_required
@require_POST
def model_make_default(request, model_id: int):
    model = selectors.model_get(user=request.user, model_id=model_id)
    try:
        registry.model_set_default(model=model, user=request.user)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc))
    else:
        messages.success(request, f"{model.label} is now the installation's default classifier.")
    return redirect(model.get_absolute_url())


# Curation pages: annotations of a job, training jobs (cells.curation, cells.training_jobs).


@login_required
def job_annotations(request, job_id: int):
    """A job's annotations, newest first, each undoable; the CSV export and import."""
    job = selectors.job_get(user=request.user, job_id=job_id)
    if request.method == "POST" and request.FILES.get("file"):
        try:
            created = curation.annotations_import_csv(user=request.user, job=job, data=request.FILES["file"].read())
        except ValidationError as exc:
            messages.error(request, f"Nothing was imported: {' '.join(exc.messages)}")
        else:
            messages.success(request, f"{len(created)} annotation{'s' if len(created) != 1 else ''} imported.")
        return redirect("job-annotations", job_id=job.pk)
    rows = curation.annotation_list(user=request.user, job=job)
    page = Paginator(rows, 100).get_page(request.GET.get("page"))
    return render(request, "cells/annotation_list.html", {"job": job, "page": page})


@login_required
@require_POST
def annotation_undo(request, annotation_id: int):
    annotation = curation.annotation_get(user=request.user, annotation_id=annotation_id)
    try:
        curation.annotation_undo(user=request.user, annotation=annotation)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.info(request, f"The annotation of cell {annotation.cell_label} of {annotation.field.name} was undone.")
    return redirect("job-annotations", job_id=annotation.field.job_id)


@login_required
def job_annotations_csv(request, job_id: int):
    job = selectors.job_get(user=request.user, job_id=job_id)
    response = StreamingHttpResponse(curation.annotations_csv(user=request.user, job=job), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="job-{job.pk}-annotations.csv"'
    return response


@login_required
def training_list(request):
    """The "Train a model" page: the form, and the user's training jobs."""
    usable = curation.jobs_usable_for_training(user=request.user).order_by("-created_at")
    form = TrainingJobForm(request.POST or None, user=request.user, jobs=usable)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                training_job = training_jobs.training_job_create(
                    owner=request.user,
                    job_ids=[job.pk for job in data["jobs"]],
                    source=data["source"],
                    name=data["name"],
                    base_model_id=data["base_model"].pk if data["base_model"] else None,
                    backbone=data["backbone"],
                    epochs=data["epochs"],
                    refine_rounds=data["refine_rounds"],
                )
            except ValidationError as exc:
                form.add_error(None, " ".join(exc.messages))
            else:
                messages.success(request, f"{training_job} is queued for training.")
                return redirect(training_job.get_absolute_url())
        status = 400
    context = {"form": form, "training_jobs": training_jobs.training_job_list(user=request.user)}
    return render(request, "cells/train_list.html", context, status=status)


@login_required
def training_detail(request, training_job_id: int):
    training_job = training_jobs.training_job_get(user=request.user, training_job_id=training_job_id)
    template = "cells/_train_progress.html" if request.htmx else "cells/train_detail.html"
    response = render(request, template, {"training_job": training_job})
    if request.htmx and training_job.is_finished:
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
def training_cancel(request, training_job_id: int):
    training_job = training_jobs.training_job_get(user=request.user, training_job_id=training_job_id)
    try:
        training_jobs.training_job_cancel(user=request.user, training_job=training_job)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.info(request, f"{training_job} will stop after the batch it is on.")
    return redirect(training_job.get_absolute_url())
