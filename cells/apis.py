"""The REST API: one thin view per operation, validating input and calling one service or selector.

Every list is paginated (`?page=`, `?page_size=` up to 500). Authentication: a session (the
browser) or `Authorization: Token <key>` (a token from POST /api/token/ or the account page;
tokens are stored hashed, expire, and stop working when the password changes). Calls are
throttled per user and per address; a throttled call gets 429 with Retry-After.
"""

import json

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, Throttled
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from cells import curation, exports, intake, mask_edits, registry, selectors, training_jobs
from cells.image_labels import labels_from_request
from cells.models import Cell, CellAnnotation, Field, Job, MaskEdit, RegisteredModel, TrainingJob
from cells.throttles import (
    AnonAddressThrottle,
    JobCreateAddressThrottle,
    JobCreateUserThrottle,
    TokenAddressThrottle,
    TokenUsernameThrottle,
    UserThrottle,
)
from cells.upload_limits import DISK_FULL, is_disk_full
from cells.uploads import JobInputError, request_uploads
from ml.constants import CLASS_NAMES
from ml.io import InputError, parse_channel_mapping
from ml.qc import QC_FLAGS
from ml.segmentation import BACKENDS


class ObjectIdField(serializers.IntegerField):
    """A primary key in a request: 1 up to the largest integer the databases store (64-bit signed), so an
    out-of-range id is a 400, not a database error."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(**kwargs)


class ApiTokenCreateApi(APIView):
    """POST a username and password, get an API token (django-rest-knox: stored hashed, expiring)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenAddressThrottle, TokenUsernameThrottle]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TokenCreate"

        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Token"

        token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")
        expiry = serializers.DateTimeField(help_text="When the token stops working.")

    @extend_schema(
        summary="Get an API token",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="Wrong username or password."),
            429: OpenApiResponse(description="Too many attempts; Retry-After says how many seconds to wait."),
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request=request._request, **serializer.validated_data)
        if getattr(request._request, "axes_locked_out", False):
            # Locked out by sign-in failures on the login page (django-axes): the same wait applies.
            raise Throttled(wait=settings.AXES_COOLOFF_TIME.total_seconds())
        if user is None or not user.is_active:
            raise ApiValidationError({"detail": "Unable to sign in with that username and password."})
        token, key = intake.api_token_regenerate(user=user, revoke_previous=False)
        return Response(self.OutputSerializer({"token": key, "expiry": token.expiry}).data)


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


def _raise_input_error(exc: JobInputError):
    raise ApiValidationError(
        {
            "detail": " ".join(f"{name}: {reason}" for name, reason in exc.field_errors.items()),
            "fields": exc.field_errors,
        }
    )


def _queue_unavailable(exc: "intake.QueueUnavailable") -> Response:
    return Response(
        {"detail": str(exc)},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(exc.retry_after_s)},
    )


def _paginated(view: APIView, request, queryset, serializer_class):
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


class ModelSummarySerializer(serializers.ModelSerializer):
    """The model that made a prediction, carried on every job, field and cell."""

    class Meta:
        model = RegisteredModel
        ref_name = "ModelSummary"
        fields = ["id", "name", "version", "kind", "format", "summary"]


class FieldOutputSerializer(serializers.ModelSerializer):
    cell_count = serializers.SerializerMethodField()
    job = serializers.IntegerField(source="job_id")
    model = ModelSummarySerializer(
        source="classifier", read_only=True, allow_null=True, help_text="The classifier of the current predictions."
    )
    missing_reference_channels = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Reference channels (red, yellow) the field came without: its classifier saw zeros there.",
    )

    class Meta:
        model = Field
        ref_name = "Field"
        fields = [
            "id",
            "job",
            "name",
            "width",
            "height",
            "bit_depth",
            "status",
            "progress",
            "error",
            "attempts",
            "segmentation_backend",
            "channels_used",
            "model_name",
            "model",
            "missing_reference_channels",
            "image_probabilities",
            "unfamiliar_share",
            "timings_s",
            "cell_count",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_cell_count(self, field: Field) -> int:
        return field.cell_count if hasattr(field, "cell_count") else field.cells.count()


class JobOutputSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField(
        help_text="queued, running, done, failed (every field) or partial (some failed)."
    )
    progress = serializers.SerializerMethodField(help_text="Fraction of the job's work done, 0 to 1.")
    fields = FieldOutputSerializer(many=True, read_only=True)
    classifier = ModelSummarySerializer(read_only=True, allow_null=True, help_text="The classifier the job runs with.")

    class Meta:
        model = Job
        ref_name = "Job"
        fields = ["id", "name", "segmentation_backend", "classifier", "created_at", "status", "progress", "fields"]

    def get_status(self, job: Job) -> str:
        return selectors.job_progress(job=job).status

    def get_progress(self, job: Job) -> float:
        return round(selectors.job_progress(job=job).fraction, 4)


class PredictionSerializer(serializers.Serializer):
    class_index = serializers.IntegerField()
    class_name = serializers.CharField()
    confidence = serializers.FloatField()


class CellOutputSerializer(serializers.ModelSerializer):
    field = serializers.CharField(source="field.name", help_text="The field's image ID.")
    field_id = serializers.IntegerField()
    bbox = serializers.ListField(
        child=serializers.IntegerField(), help_text="[min_row, min_col, max_row, max_col), pixels."
    )
    predictions = serializers.SerializerMethodField(
        help_text="The cell's likeliest classes (confidence >= 0.3, at least one), most confident first."
    )
    model = ModelSummarySerializer(source="classifier", read_only=True, allow_null=True)
    annotation = serializers.SerializerMethodField(help_text="The cell's current annotation; null when none.")
    annotation_version = serializers.SerializerMethodField(
        help_text="Send it with an annotation: a newer one means another tab changed the cell (409)."
    )

    class Meta:
        model = Cell
        ref_name = "Cell"
        fields = [
            "id",
            "field",
            "field_id",
            "label",
            "bbox",
            "area_px",
            "mask_rle",
            "nucleus_rle",
            "probabilities",
            "predictions",
            "model_name",
            "model",
            "familiarity",
            "unfamiliar",
            "qc_flags",
            "measurements",
            "annotation",
            "annotation_version",
        ]

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_annotation(self, cell: Cell) -> dict | None:
        """The cell's current annotation (cells.curation): kind, classes, author, when; null when none."""
        annotation = curation.current_annotation(cell=cell)
        if annotation is None:
            return None
        return {
            "id": annotation.pk,
            "kind": annotation.kind,
            "classes": annotation.classes,
            "author": annotation.author.username if annotation.author else "",
            "created_at": annotation.created_at.isoformat(timespec="seconds"),
        }

    def get_annotation_version(self, cell: Cell) -> int:
        return curation.cell_version(field_id=cell.field_id, cell_label=cell.label)

    @extend_schema_field(PredictionSerializer(many=True))
    def get_predictions(self, cell: Cell) -> list[dict]:
        return [
            {"class_index": CLASS_NAMES.index(name), "class_name": name, "confidence": round(confidence, 4)}
            for name, confidence in selectors.cell_top_classes(cell)
        ]


class JobListCreateApi(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [AnonAddressThrottle, UserThrottle, JobCreateUserThrottle, JobCreateAddressThrottle]
    pagination_class = Pagination

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "JobCreate"

        name = serializers.CharField(required=False, allow_blank=True, max_length=200)
        segmentation_backend = serializers.ChoiceField(
            choices=BACKENDS,
            required=False,
            help_text='A builtin backend that can run here, or a segmentation model of GET /api/models/ as "model:<id>".',
        )
        classifier = ObjectIdField(
            required=False, help_text="The id of the classifier to run (GET /api/models/); default: the installation's."
        )
        pixel_size_um = serializers.FloatField(
            required=False,
            min_value=0.001,
            help_text="Microns per pixel; sets the segmentation's scale (else estimated).",
        )
        nucleus_diameter_px = serializers.FloatField(
            required=False, min_value=1.0, help_text="Typical nucleus diameter in pixels; overrides pixel_size_um."
        )
        channel_mapping = serializers.CharField(
            required=False,
            allow_blank=True,
            help_text='JSON: OME-TIFF channel name -> red/green/blue/yellow, e.g. {"DAPI": "blue", "Alexa 488": "green"}; '
            "without it OME channel names are recognised by their words (DAPI, Hoechst, GFP, tubulin, ...).",
        )

        def validate_channel_mapping(self, value: str) -> dict[str, str]:
            try:
                return parse_channel_mapping(value)
            except InputError as error:
                raise serializers.ValidationError(str(error)) from None

        files = serializers.ListField(
            child=serializers.FileField(),
            required=False,
            help_text="Any number of channel files named {ID}_{red|green|blue|yellow}.png|.tif, 4-plane TIFFs "
            "(one field each, named after the file) and zips of fields in that layout. One job holds them all.",
        )
        assignments = serializers.CharField(
            required=False,
            allow_blank=True,
            help_text="JSON mapping a file name in `files` (its relative path when `paths` gives one) to its field and "
            'channel, for files not named by the convention: {"scan 1.png": {"field": "A1", "channel": "green"}}; '
            'channel "multichannel" for a 4-plane TIFF.',
        )
        paths = serializers.CharField(
            required=False,
            allow_blank=True,
            help_text="JSON list of the relative path of each file in `files`, in order, for a folder upload: "
            '["plate1/A3/blue.png", "plate1/A4/blue.png"]. Folders name the fields: a bare blue.png is the blue '
            "channel of the field named after its folder, and files of the same name in two folders are two fields.",
        )
        field_name = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=200,
            help_text="The ID of the one field sent in the channel slots below.",
        )
        labels = serializers.CharField(
            required=False,
            allow_blank=True,
            help_text="The fields' known classes, one `ID,Label` line per field (Label: class numbers 0..18 or "
            "names joined by '|', e.g. `plate1-A3,0|16`). A `train.csv` inside a zip or a CSV in `files` works too.",
        )
        labels_file = serializers.FileField(required=False, help_text="A CSV with the columns ID,Label.")
        red = serializers.FileField(required=False)
        green = serializers.FileField(required=False)
        blue = serializers.FileField(required=False)
        yellow = serializers.FileField(required=False)
        multichannel = serializers.FileField(
            required=False, help_text="One TIFF with the 4 channels as (4, H, W) or (H, W, 4)."
        )

        def __init__(self, *args, user=None, **kwargs):
            super().__init__(*args, **kwargs)
            if user is not None:
                self.fields["segmentation_backend"].choices = [
                    backend for backend, _ in registry.segmentation_choices(user)
                ]

    @extend_schema(summary="List your jobs", responses=JobOutputSerializer(many=True))
    def get(self, request):
        return _paginated(self, request, selectors.job_list(user=request.user), JobOutputSerializer)

    @extend_schema(
        summary="Create a job from one field or a batch",
        description="Every field is validated on its own; when any is unusable nothing is stored and the 400 "
        "response's `fields` maps each field (or file) to the reason. Processing starts once the job is stored.",
        request={"multipart/form-data": InputSerializer},
        responses={
            201: JobOutputSerializer,
            400: OpenApiResponse(description="Unusable input; `detail` says what and why."),
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data, user=request.user)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            with request_uploads(
                request.FILES,
                field_name=data.get("field_name", ""),
                assignments=data.get("assignments", ""),
                paths=data.get("paths", ""),
            ) as uploads:
                job = intake.job_create(
                    owner=request.user,
                    uploads=uploads,
                    name=data.get("name", ""),
                    segmentation_backend=data.get("segmentation_backend"),
                    classifier_id=data.get("classifier"),
                    image_labels=labels_from_request(request.FILES, typed=data.get("labels", "")),
                    pixel_size_um=data.get("pixel_size_um"),
                    nucleus_diameter_px=data.get("nucleus_diameter_px"),
                    channel_mapping=data.get("channel_mapping") or None,
                )
        except JobInputError as exc:
            _raise_input_error(exc)
        except intake.QueueUnavailable as exc:
            return _queue_unavailable(exc)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            return Response({"detail": DISK_FULL}, status=status.HTTP_507_INSUFFICIENT_STORAGE)
        return Response(
            JobOutputSerializer(selectors.job_get(user=request.user, job_id=job.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class JobDetailApi(APIView):
    @extend_schema(summary="Read a job with its fields' progress", responses=JobOutputSerializer)
    def get(self, request, job_id: int):
        return Response(JobOutputSerializer(selectors.job_get(user=request.user, job_id=job_id)).data)

    @extend_schema(summary="Delete a job with its fields, cells and files", responses={204: None})
    def delete(self, request, job_id: int):
        intake.job_delete(job=selectors.job_get(user=request.user, job_id=job_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class JobFieldListApi(APIView):
    pagination_class = Pagination

    @extend_schema(summary="List a job's fields", responses=FieldOutputSerializer(many=True))
    def get(self, request, job_id: int):
        job = selectors.job_get(user=request.user, job_id=job_id)
        return _paginated(self, request, selectors.field_list(user=request.user, job=job), FieldOutputSerializer)


class FieldDetailApi(APIView):
    @extend_schema(summary="Read a field", responses=FieldOutputSerializer)
    def get(self, request, field_id: int):
        return Response(FieldOutputSerializer(selectors.field_get(user=request.user, field_id=field_id)).data)


class FieldRetryApi(APIView):
    @extend_schema(
        summary="Run a failed field again",
        request=None,
        responses={202: FieldOutputSerializer, 409: OpenApiResponse(description="The field has not failed.")},
    )
    def post(self, request, field_id: int):
        field = selectors.field_get(user=request.user, field_id=field_id)
        try:
            intake.field_retry(field=field)
        except DjangoValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        except intake.QueueUnavailable as exc:
            return _queue_unavailable(exc)
        return Response(
            FieldOutputSerializer(selectors.field_get(user=request.user, field_id=field_id)).data,
            status=status.HTTP_202_ACCEPTED,
        )


class FieldLabelsApi(APIView):
    @extend_schema(
        summary="Download a field's cell or nucleus label image",
        description="`kind` is `cells` or `nuclei`: a 16-bit grayscale PNG, 0 = background, cell i contains nucleus i.",
        responses={(200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request, field_id: int, kind: str):
        field, stored = selectors.field_labels_get(user=request.user, field_id=field_id, kind=kind)
        return FileResponse(
            stored.open("rb"), content_type="image/png", as_attachment=True, filename=f"{field.name}_{kind}.png"
        )


class CellFilterSerializer(serializers.Serializer):
    class_index = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=len(CLASS_NAMES) - 1,
        help_text="Rank and filter by this class's confidence (0 = Nucleoplasm ... 18 = Negative) instead of the top class's.",
    )
    min_confidence = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text="Keep cells whose confidence reaches this."
    )
    order = serializers.ChoiceField(
        choices=list(selectors.CELL_ORDER_LABELS.items()),
        required=False,
        default="field",
        help_text="`-confidence`: highest confidence first (a leading `-` sorts descending); `confidence`: lowest "
        "first; `field`: by field, then cell id.",
    )
    unfamiliar = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: only cells unlike the classifier's training cells; false: only familiar ones.",
    )
    qc = serializers.ChoiceField(
        choices=["clean", "flagged", *QC_FLAGS],
        required=False,
        allow_null=True,
        default=None,
        help_text="Quality control: `clean` (no flag), `flagged` (any flag), or the cells carrying one flag.",
    )


class JobCellListApi(APIView):
    pagination_class = Pagination

    @extend_schema(
        summary="List a job's cells", parameters=[CellFilterSerializer], responses=CellOutputSerializer(many=True)
    )
    def get(self, request, job_id: int):
        filters = CellFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        job = selectors.job_get(user=request.user, job_id=job_id)
        return _paginated(
            self,
            request,
            selectors.cell_list(user=request.user, job=job, **filters.validated_data),
            CellOutputSerializer,
        )


class FieldCellListApi(APIView):
    pagination_class = Pagination

    @extend_schema(
        summary="List a field's cells", parameters=[CellFilterSerializer], responses=CellOutputSerializer(many=True)
    )
    def get(self, request, field_id: int):
        filters = CellFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        field = selectors.field_get(user=request.user, field_id=field_id)
        return _paginated(
            self,
            request,
            selectors.cell_list(user=request.user, field=field, **filters.validated_data),
            CellOutputSerializer,
        )


class CellDetailApi(APIView):
    @extend_schema(summary="Read a cell with its predictions", responses=CellOutputSerializer)
    def get(self, request, cell_id: int):
        return Response(CellOutputSerializer(selectors.cell_get(user=request.user, cell_id=cell_id)).data)


class JobClassCountApi(APIView):
    class FilterSerializer(serializers.Serializer):
        min_confidence = serializers.FloatField(required=False, min_value=0.0, max_value=1.0, default=0.5)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ClassCount"

        index = serializers.IntegerField()
        name = serializers.CharField()
        cells = serializers.IntegerField(help_text="Cells whose confidence for this class reaches min_confidence.")

    @extend_schema(
        summary="Count a job's cells per class", parameters=[FilterSerializer], responses=OutputSerializer(many=True)
    )
    def get(self, request, job_id: int):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        job = selectors.job_get(user=request.user, job_id=job_id)
        return Response(
            self.OutputSerializer(selectors.class_counts(job=job, **filters.validated_data), many=True).data
        )


class _AnyMediaRenderer(BaseRenderer):
    """Lets a client that asks for text/csv or application/zip get the file; errors still come as JSON."""

    media_type = "*/*"
    format = "file"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else json.dumps(data).encode()


class _JobExportApi(APIView):
    export = ""
    renderer_classes = [JSONRenderer, _AnyMediaRenderer]

    def get(self, request, job_id: int):
        job = selectors.job_get(user=request.user, job_id=job_id)
        return exports.export_response(job=job, export=self.export, **self._options(request))

    def _options(self, request) -> dict:
        return {}


class SubmissionFilterSerializer(serializers.Serializer):
    exclude_qc = serializers.CharField(
        required=False,
        default="",
        help_text="Leave out cells carrying any of these quality-control flags: comma-separated names of "
        f"{', '.join(QC_FLAGS)}, or `all`.",
    )

    def validate_exclude_qc(self, value: str) -> list[str]:
        try:
            return exports.parse_exclude_qc(value)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None


@extend_schema(
    summary="Download the Kaggle submission CSV",
    description="`ID,ImageWidth,ImageHeight,PredictionString`: one row per field, a `label confidence mask` triple "
    "for each of the 19 classes of every classified cell; `exclude_qc` leaves flagged cells out.",
    parameters=[SubmissionFilterSerializer],
    responses={(200, "text/csv"): OpenApiTypes.STR},
)
class JobSubmissionApi(_JobExportApi):
    export = "submission"

    def _options(self, request) -> dict:
        filters = SubmissionFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return filters.validated_data


class CocoFilterSerializer(serializers.Serializer):
    min_confidence = serializers.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        default=exports.COCO_DEFAULT_MIN_CONFIDENCE,
        help_text=f"Leave out annotations scoring below this (default {exports.COCO_DEFAULT_MIN_CONFIDENCE}; 0 keeps all 19 per cell).",
    )


@extend_schema(
    summary="Download COCO instance segmentation JSON",
    description="images = fields (`file_name` = the protein channel as uploaded); categories = the 19 classes "
    "(id = HPA label + 1, since COCO tools reserve 0; `hpa_label` = 0..18); one annotation per classified cell and "
    "class with confidence >= min_confidence: compressed RLE segmentation, bbox [x, y, w, h], area, score.",
    parameters=[CocoFilterSerializer],
    responses={(200, "application/json"): OpenApiTypes.OBJECT},
    examples=[OpenApiExample("Load it", value="pycocotools.coco.COCO('job-1-coco.json')", response_only=True)],
)
class JobCocoApi(_JobExportApi):
    export = "coco"

    def _options(self, request) -> dict:
        filters = CocoFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return filters.validated_data


@extend_schema(
    summary="Download the per-cell CSV",
    description="field, cell_id, min_row, min_col, max_row, max_col, area_px and the 19 class confidences.",
    responses={(200, "text/csv"): OpenApiTypes.STR},
)
class JobCellsCsvApi(_JobExportApi):
    export = "cells"


@extend_schema(
    summary="Download every field's label images (zip)",
    description="{ID}_cells.png and {ID}_nuclei.png per processed field: 16-bit PNG, 0 = background, cell i contains nucleus i.",
    responses={(200, "application/zip"): OpenApiTypes.BINARY},
)
class JobLabelsApi(_JobExportApi):
    export = "labels"


@extend_schema(
    summary="Download the per-cell features CSV",
    description="field, cell_id, qc_flags (joined by |) and every measurement of `ml.measure`: shape, intensity "
    "per channel, the protein's nucleus-to-cytoplasm ratio and correlations, focus, Haralick, LBP and scattering.",
    responses={(200, "text/csv"): OpenApiTypes.STR},
)
class JobFeaturesCsvApi(_JobExportApi):
    export = "features"


@extend_schema(
    summary="Download the per-cell features as Parquet",
    description="The features CSV's columns: measurements float64 (null where they do not apply), qc_flags a list.",
    responses={(200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY},
)
class JobFeaturesParquetApi(_JobExportApi):
    export = "features-parquet"


class CropFilterSerializer(CellFilterSerializer):
    order = None
    image_format = serializers.ChoiceField(
        choices=list(exports.CROP_FORMATS),
        required=False,
        default="png",
        help_text="png: one 8- or 16-bit PNG per channel and cell; tiff: one 4-plane TIFF per cell (red, green, blue, yellow).",
    )
    field = ObjectIdField(required=False, min_value=1, help_text="Only this field's cells (its id).")
    cells = serializers.RegexField(
        r"^\d+(,\d+)*$",
        required=False,
        help_text="Only these cells: cell numbers of `field` when it is given, else cell ids, separated by commas.",
    )


@extend_schema(
    summary="Download cell crops (zip)",
    description="Each chosen cell's bounding box cut from its field's four channels at full resolution and the "
    "field's bit depth, its mask ({field}/cell-{n}_mask.png) and crops.csv. Filters as for the cell list.",
    parameters=[CropFilterSerializer],
    responses={(200, "application/zip"): OpenApiTypes.BINARY},
)
class JobCropsApi(APIView):
    renderer_classes = [JSONRenderer, _AnyMediaRenderer]

    def get(self, request, job_id: int):
        filters = CropFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = dict(filters.validated_data)
        job = selectors.job_get(user=request.user, job_id=job_id)
        field = selectors.field_get(user=request.user, field_id=data.pop("field")) if data.get("field") else None
        if field is not None and field.job_id != job.pk:
            raise Http404("No such field in this job.")
        image_format = data.pop("image_format")
        chosen = [int(part) for part in data.pop("cells", "").split(",") if part]
        cells = selectors.cell_list(user=request.user, job=job, field=field, **data)
        if chosen:
            cells = cells.filter(**{"label__in" if field else "pk__in": chosen})
        name = f"{field.name}-crops" if field else "crops"
        return exports.crops_response(job=job, cells=cells, image_format=image_format, name=name)


@extend_schema(
    summary="Download everything the job produced (zip)",
    description="submission.csv, coco.json, cells.csv, labels/ (16-bit label images and their manifest) and "
    "crops/ (every cell's PNG crops with crops.csv).",
    responses={(200, "application/zip"): OpenApiTypes.BINARY},
)
class JobArchiveApi(APIView):
    renderer_classes = [JSONRenderer, _AnyMediaRenderer]

    def get(self, request, job_id: int):
        return exports.job_zip_response(job=selectors.job_get(user=request.user, job_id=job_id))


class ModelOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "Model"

    id = serializers.IntegerField(
        allow_null=True,
        help_text='Null for builtin segmentation backends; a segmentation model is chosen as backend "model:<id>".',
    )
    name = serializers.CharField()
    version = serializers.CharField()
    kind = serializers.ChoiceField(choices=["classifier", "segmentation"])
    format = serializers.CharField()
    available = serializers.BooleanField()
    description = serializers.CharField(help_text="The one line of the model's card that matters.")
    is_default = serializers.BooleanField()
    visibility = serializers.CharField()


class ModelDetailSerializer(serializers.ModelSerializer):
    class Meta:
        model = RegisteredModel
        ref_name = "ModelDetail"
        fields = [
            "id",
            "kind",
            "name",
            "version",
            "format",
            "architecture",
            "sha256",
            "cell_sha256",
            "class_names",
            "class_mapping",
            "input_size_px",
            "normalisation",
            "metrics",
            "training_data",
            "summary",
            "card",
            "visibility",
            "is_default",
            "created_at",
        ]


class ModelListApi(APIView):
    parser_classes = [MultiPartParser, FormParser]
    pagination_class = Pagination

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ModelImport"

        kind = serializers.ChoiceField(choices=RegisteredModel.Kind.values, default=RegisteredModel.Kind.CLASSIFIER)
        file = serializers.FileField(
            help_text="A classifier: an hpaweb checkpoint (.pt), a classical classifier (.skops) or a bioimage.io "
            "package (.zip); "
            "a segmenter: its nucleus bioimage.io package (.zip)."
        )
        cell_file = serializers.FileField(
            required=False, help_text="A segmenter's cell bioimage.io package (.zip); required with kind=segmenter."
        )
        name = serializers.CharField(
            required=False, allow_blank=True, max_length=200, help_text="A segmenter's name; default: its packages'."
        )
        visibility = serializers.ChoiceField(choices=RegisteredModel.Visibility.values, default="private")
        class_mapping = serializers.CharField(
            required=False,
            allow_blank=True,
            help_text='JSON mapping output index to HPA class name, for packages whose outputs are not named: {"0": "Nucleoplasm", ...}.',
        )

        def validate(self, data):
            if data["kind"] == RegisteredModel.Kind.SEGMENTER and "cell_file" not in data:
                raise serializers.ValidationError({"cell_file": "A segmenter needs its cell package as cell_file."})
            return data

    @extend_schema(
        summary="List the classifiers and the segmentations (builtin backends, imported package pairs) you can choose",
        responses=ModelOutputSerializer(many=True),
    )
    def get(self, request):
        return _paginated(self, request, selectors.model_list(user=request.user), ModelOutputSerializer)

    @extend_schema(
        summary="Import a classifier, or a nucleus + cell segmentation package pair (kind=segmenter)",
        description="The files are checked (a bioimage.io package runs its own test inputs) before anything is stored. "
        "Shared models are added by administrators only; private ones where the installation allows them. "
        'A segmenter is chosen by a job as its segmentation_backend "model:<id>".',
        request={"multipart/form-data": InputSerializer},
        responses={201: ModelDetailSerializer, 400: OpenApiResponse(description="Refused; `detail` says why.")},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            if data["kind"] == RegisteredModel.Kind.SEGMENTER:
                model = registry.segmenter_import(
                    owner=request.user,
                    nuclei_upload=data["file"],
                    cell_upload=data["cell_file"],
                    visibility=data["visibility"],
                    name=data.get("name", ""),
                )
            else:
                mapping = registry.parse_class_mapping(data.get("class_mapping", ""))
                model = registry.model_import(
                    owner=request.user, upload=data["file"], visibility=data["visibility"], class_mapping=mapping
                )
        except registry.ModelImportError as exc:
            raise ApiValidationError({"detail": " ".join(exc.messages)}) from None
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        return Response(ModelDetailSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetailApi(APIView):
    @extend_schema(
        summary="Read a model: card, classes, input, metrics and training data", responses=ModelDetailSerializer
    )
    def get(self, request, model_id: int):
        return Response(ModelDetailSerializer(selectors.model_get(user=request.user, model_id=model_id)).data)

    @extend_schema(summary="Delete an imported model (its owner or an administrator)", responses={204: None})
    def delete(self, request, model_id: int):
        model = selectors.model_get(user=request.user, model_id=model_id)
        try:
            registry.model_delete(model=model, user=request.user)
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except DjangoValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelDefaultApi(APIView):
    @extend_schema(
        summary="Make a shared model the installation's default (administrators)",
        request=None,
        responses=ModelDetailSerializer,
    )
    def post(self, request, model_id: int):
        model = selectors.model_get(user=request.user, model_id=model_id)
        try:
            registry.model_set_default(model=model, user=request.user)
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except DjangoValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        return Response(ModelDetailSerializer(model).data)


class ClassifierChoiceSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ClassifierChoice"

    classifier = ObjectIdField(help_text="The id of the classifier (GET /api/models/).")


def _chosen_classifier(request) -> RegisteredModel:
    """The classifier a request names (one the user may use; else 404)."""
    choice = ClassifierChoiceSerializer(data=request.data)
    choice.is_valid(raise_exception=True)
    return selectors.model_get(user=request.user, model_id=choice.validated_data["classifier"])


class JobClassifyApi(APIView):
    @extend_schema(
        summary="Run a finished job again with another classifier",
        description="Every field's cells are classified anew; the earlier model's predictions are kept and can be "
        "compared (GET .../compare/).",
        request=ClassifierChoiceSerializer,
        responses={202: JobOutputSerializer, 409: OpenApiResponse(description="A field is not finished.")},
    )
    def post(self, request, job_id: int):
        job = selectors.job_get(user=request.user, job_id=job_id)
        model = _chosen_classifier(request)
        try:
            intake.job_classify(job=job, classifier=model, user=request.user)
        except DjangoValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        return Response(
            JobOutputSerializer(selectors.job_get(user=request.user, job_id=job_id)).data,
            status=status.HTTP_202_ACCEPTED,
        )


class FieldClassifyApi(APIView):
    @extend_schema(
        summary="Run a finished field again with another classifier (earlier predictions are kept)",
        request=ClassifierChoiceSerializer,
        responses={202: FieldOutputSerializer, 409: OpenApiResponse(description="The field is not finished.")},
    )
    def post(self, request, field_id: int):
        field = selectors.field_get(user=request.user, field_id=field_id)
        model = _chosen_classifier(request)
        try:
            intake.fields_classify(fields=[field], classifier=model, user=request.user)
        except DjangoValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        return Response(
            FieldOutputSerializer(selectors.field_get(user=request.user, field_id=field_id)).data,
            status=status.HTTP_202_ACCEPTED,
        )


class JobCompareApi(APIView):
    class FilterSerializer(serializers.Serializer):
        first = ObjectIdField(help_text="A classifier the job was run with.")
        second = ObjectIdField(help_text="Another classifier the job was run with.")
        min_confidence = serializers.FloatField(required=False, min_value=0.0, max_value=1.0, default=0.5)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ModelComparison"

        first = ModelSummarySerializer()
        second = ModelSummarySerializer()
        cells = serializers.IntegerField(help_text="Cells both models predicted.")
        top_class_agreement = serializers.FloatField(
            allow_null=True, help_text="Share of them with the same top class."
        )
        per_class = serializers.ListField(
            child=serializers.DictField(),
            help_text="Per class: cells each model calls it at min_confidence, both, and agreement (intersection over union).",
        )
        disagreeing_cell_ids = serializers.ListField(child=serializers.IntegerField())

    @extend_schema(
        summary="Compare two classifiers on a job", parameters=[FilterSerializer], responses=OutputSerializer
    )
    def get(self, request, job_id: int):
        job = selectors.job_get(user=request.user, job_id=job_id)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        first = selectors.model_get(user=request.user, model_id=data["first"])
        second = selectors.model_get(user=request.user, model_id=data["second"])
        comparison = selectors.model_comparison(
            job=job, first=first, second=second, min_confidence=data["min_confidence"]
        )
        return Response(self.OutputSerializer(comparison).data)


# Curation: labels summary, annotations, mask fixes, training jobs (cells.curation, cells.mask_edits, cells.training).


def _conflict_or_invalid(exc: DjangoValidationError) -> Response:
    """409 for a conflict with the stored state (a stale version, something undone already), else 400."""
    return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)


class JobSummaryApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "JobSummary"

        class FieldSummarySerializer(serializers.Serializer):
            class Meta:
                ref_name = "FieldSummary"

            field = serializers.CharField(source="field.name")
            field_id = serializers.IntegerField(source="field.pk")
            labels = serializers.ListField(
                child=serializers.DictField(),
                help_text="index, name, rank among the 19 field-level confidences, confidence.",
            )
            top_classes = serializers.ListField(child=serializers.ListField(), help_text="[class name, confidence].")
            agreement = serializers.FloatField(
                allow_null=True, help_text="IoU of the labels and the classes the field shows at 0.5."
            )

        fields = FieldSummarySerializer(many=True)
        mean_agreement = serializers.FloatField(allow_null=True)
        labelled_fields = serializers.IntegerField()
        class_counts = serializers.SerializerMethodField(help_text="Cells per class at confidence 0.5.")
        histogram = serializers.ListField(
            child=serializers.DictField(), help_text="Top-confidence bins: low, high, cells."
        )

        def get_class_counts(self, summary) -> list[dict]:
            return [{"index": c.index, "name": c.name, "cells": c.cells} for c in summary.class_counts]

    @extend_schema(
        summary="A job's summary: labels against predictions, cells per class, confidences", responses=OutputSerializer
    )
    def get(self, request, job_id: int):
        summary = selectors.job_summary(job=selectors.job_get(user=request.user, job_id=job_id))
        return Response(self.OutputSerializer(summary).data)


@extend_schema(summary="Download the job summary CSV", responses={(200, "text/csv"): OpenApiTypes.STR})
class JobSummaryCsvApi(APIView):
    renderer_classes = [JSONRenderer, _AnyMediaRenderer]

    def get(self, request, job_id: int):
        return exports.job_summary_response(job=selectors.job_get(user=request.user, job_id=job_id))


class AnnotationOutputSerializer(serializers.ModelSerializer):
    field = serializers.CharField(source="field.name")
    cell = ObjectIdField(source="cell_id", allow_null=True, help_text="Null while a mask fix changed the cell.")
    author = serializers.CharField(source="author.username", default="")
    class_names = serializers.SerializerMethodField()
    corrected_model = ModelSummarySerializer(read_only=True, allow_null=True)
    kind = serializers.CharField(help_text="classes, not_a_cell or badly_outlined.")
    version = serializers.SerializerMethodField(help_text="The cell's annotation version after this action.")

    class Meta:
        model = CellAnnotation
        ref_name = "CellAnnotation"
        fields = [
            "id", "field", "field_id", "cell", "cell_label", "kind", "classes", "class_names", "author", "created_at",
            "corrected_model", "corrected_model_name", "corrected_probabilities", "undone_at", "version",
        ]  # fmt: skip

    def get_class_names(self, annotation) -> list[str]:
        return [CLASS_NAMES[index] for index in annotation.classes]

    def get_version(self, annotation) -> int:
        return curation.cell_version(field_id=annotation.field_id, cell_label=annotation.cell_label)


class AnnotationInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "CellAnnotationCreate"

    kind = serializers.ChoiceField(
        choices=CellAnnotation.Kind.choices,
        default=CellAnnotation.Kind.CLASSES,
        help_text="classes (give `classes`), not_a_cell or badly_outlined.",
    )
    classes = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=len(CLASS_NAMES) - 1), required=False, default=list
    )
    version = serializers.IntegerField(
        required=False, allow_null=True, default=None,
        help_text="The cell's annotation version you saw; a newer one answers 409 and nothing is saved.",
    )  # fmt: skip


def _annotate(request, calls, data) -> Response:
    try:
        created = curation.annotations_create(
            user=request.user, calls=calls, kind=data["kind"], classes=data.get("classes", [])
        )
    except curation.AnnotationConflict as exc:
        return _conflict_or_invalid(exc)
    except DjangoValidationError as exc:
        raise ApiValidationError({"detail": " ".join(exc.messages)}) from None
    return created


class CellAnnotationApi(APIView):
    pagination_class = Pagination

    @extend_schema(
        summary="A cell's annotations, newest first (undone ones included)",
        responses=AnnotationOutputSerializer(many=True),
    )
    def get(self, request, cell_id: int):
        cell = selectors.cell_get(user=request.user, cell_id=cell_id)
        rows = curation.annotation_list(user=request.user, field=cell.field).filter(cell_label=cell.label)
        return _paginated(self, request, rows, AnnotationOutputSerializer)

    @extend_schema(
        summary="Annotate a cell: its classes, or not a cell / badly outlined",
        request=AnnotationInputSerializer,
        responses={201: AnnotationOutputSerializer, 409: OpenApiResponse(description="Annotated elsewhere since.")},
    )
    def post(self, request, cell_id: int):
        cell = selectors.cell_get(user=request.user, cell_id=cell_id)
        serializer = AnnotationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        created = _annotate(request, [curation.CellCall(cell=cell, version=data["version"])], data)
        if isinstance(created, Response):
            return created
        return Response(AnnotationOutputSerializer(created[0]).data, status=status.HTTP_201_CREATED)


class JobAnnotationListApi(APIView):
    pagination_class = Pagination

    class InputSerializer(AnnotationInputSerializer):
        class Meta:
            ref_name = "CellAnnotationBatch"

        class CellVersionSerializer(serializers.Serializer):
            class Meta:
                ref_name = "CellVersion"

            id = ObjectIdField()
            version = serializers.IntegerField(required=False, allow_null=True, default=None)

        cells = CellVersionSerializer(many=True, help_text="The cells (ids) and the annotation versions you saw.")

    @extend_schema(
        summary="List a job's annotations, newest first",
        parameters=[OpenApiParameter("include_undone", bool, default=True)],
        responses=AnnotationOutputSerializer(many=True),
    )
    def get(self, request, job_id: int):
        job = selectors.job_get(user=request.user, job_id=job_id)
        include_undone = request.query_params.get("include_undone", "true").lower() not in ("false", "0")
        rows = curation.annotation_list(user=request.user, job=job, include_undone=include_undone)
        return _paginated(self, request, rows, AnnotationOutputSerializer)

    @extend_schema(
        summary="Annotate several cells of a job alike (all or nothing)",
        request=InputSerializer,
        responses={201: AnnotationOutputSerializer(many=True), 409: OpenApiResponse(description="A cell changed.")},
    )
    def post(self, request, job_id: int):
        job = selectors.job_get(user=request.user, job_id=job_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        cells = {
            cell.pk: cell
            for cell in selectors.cell_list(user=request.user, job=job).filter(pk__in=[c["id"] for c in data["cells"]])
        }
        missing = [c["id"] for c in data["cells"] if c["id"] not in cells]
        if missing:
            raise ApiValidationError(
                {"detail": f"This job has no cell with id {missing[0]}; choose cells of this job."}
            )
        calls = [curation.CellCall(cell=cells[c["id"]], version=c["version"]) for c in data["cells"]]
        created = _annotate(request, calls, data)
        if isinstance(created, Response):
            return created
        return Response(AnnotationOutputSerializer(created, many=True).data, status=status.HTTP_201_CREATED)


class AnnotationUndoApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CellAnnotationUndo"

        version = serializers.IntegerField(required=False, allow_null=True, default=None)

    @extend_schema(
        summary="Undo an annotation (the cell's previous one is current again)",
        request=InputSerializer,
        responses={
            200: AnnotationOutputSerializer,
            409: OpenApiResponse(description="Undone already, or changed since."),
        },
    )
    def post(self, request, annotation_id: int):
        annotation = curation.annotation_get(user=request.user, annotation_id=annotation_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            annotation = curation.annotation_undo(
                user=request.user, annotation=annotation, version=serializer.validated_data["version"]
            )
        except DjangoValidationError as exc:
            return _conflict_or_invalid(exc)
        return Response(AnnotationOutputSerializer(annotation).data)


@extend_schema(summary="Download a job's annotations (CSV)", responses={(200, "text/csv"): OpenApiTypes.STR})
class JobAnnotationsCsvApi(APIView):
    renderer_classes = [JSONRenderer, _AnyMediaRenderer]

    def get(self, request, job_id: int):
        job = selectors.job_get(user=request.user, job_id=job_id)
        return curation_response(job=job, user=request.user)


def curation_response(*, job: Job, user) -> StreamingHttpResponse:
    response = StreamingHttpResponse(curation.annotations_csv(user=user, job=job), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="job-{job.pk}-annotations.csv"'
    return response


class JobAnnotationImportApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CellAnnotationImport"

        file = serializers.FileField(
            help_text="CSV with the columns field, cell_id, classes (kind optional), as exported."
        )

    @extend_schema(
        summary="Import annotations from a CSV (all rows or none)",
        request={"multipart/form-data": InputSerializer},
        responses={
            201: OpenApiTypes.OBJECT,
            400: OpenApiResponse(description="A row is unusable; `detail` says which."),
        },
    )
    def post(self, request, job_id: int):
        job = selectors.job_get(user=request.user, job_id=job_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            created = curation.annotations_import_csv(
                user=request.user, job=job, data=serializer.validated_data["file"].read()
            )
        except DjangoValidationError as exc:
            raise ApiValidationError({"detail": " ".join(exc.messages)}) from None
        return Response({"imported": len(created)}, status=status.HTTP_201_CREATED)


class MaskEditOutputSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", default="")
    kind = serializers.CharField(help_text="delete, merge or split.")

    class Meta:
        model = MaskEdit
        ref_name = "MaskEdit"
        fields = ["id", "field_id", "kind", "details", "author", "created_at", "undone_at"]


def _mask_fix(request, action) -> Response:
    try:
        edit = action()
    except DjangoValidationError as exc:
        raise ApiValidationError({"detail": " ".join(exc.messages)}) from None
    return Response(MaskEditOutputSerializer(edit).data, status=status.HTTP_201_CREATED)


class CellMaskDeleteApi(APIView):
    @extend_schema(
        summary="Delete a cell from its field (undoable)", request=None, responses={201: MaskEditOutputSerializer}
    )
    def post(self, request, cell_id: int):
        cell = selectors.cell_get(user=request.user, cell_id=cell_id)
        return _mask_fix(request, lambda: mask_edits.cell_delete(user=request.user, cell=cell))


class CellMaskMergeApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CellMerge"

        other = ObjectIdField(help_text="The id of a touching cell of the same field.")

    @extend_schema(
        summary="Merge a cell with a touching one (undoable)",
        request=InputSerializer,
        responses={201: MaskEditOutputSerializer},
    )
    def post(self, request, cell_id: int):
        cell = selectors.cell_get(user=request.user, cell_id=cell_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        other = selectors.cell_get(user=request.user, cell_id=serializer.validated_data["other"])
        return _mask_fix(request, lambda: mask_edits.cells_merge(user=request.user, first=cell, second=other))


class CellMaskSplitApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CellSplit"

        line = serializers.ListField(
            child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
            min_length=2,
            max_length=200,
            help_text="The line as [row, col] points in field pixels; it must cross the cell.",
        )

    @extend_schema(
        summary="Split a cell along a line (undoable)",
        request=InputSerializer,
        responses={201: MaskEditOutputSerializer},
    )
    def post(self, request, cell_id: int):
        cell = selectors.cell_get(user=request.user, cell_id=cell_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        points = [tuple(point) for point in serializer.validated_data["line"]]
        return _mask_fix(request, lambda: mask_edits.cell_split(user=request.user, cell=cell, points=points))


class FieldMaskEditListApi(APIView):
    pagination_class = Pagination

    @extend_schema(summary="A field's mask fixes, newest first", responses=MaskEditOutputSerializer(many=True))
    def get(self, request, field_id: int):
        field = selectors.field_get(user=request.user, field_id=field_id)
        return _paginated(self, request, field.mask_edits.select_related("author"), MaskEditOutputSerializer)


class MaskEditUndoApi(APIView):
    @extend_schema(summary="Undo a field's latest mask fix", request=None, responses={200: MaskEditOutputSerializer})
    def post(self, request, edit_id: int):
        edit = get_object_or_404(MaskEdit.objects.filter(field__job__owner=request.user), pk=edit_id)
        try:
            edit = mask_edits.mask_edit_undo(user=request.user, edit=edit)
        except DjangoValidationError as exc:
            return _conflict_or_invalid(exc)
        return Response(MaskEditOutputSerializer(edit).data)


class TrainingJobOutputSerializer(serializers.ModelSerializer):
    jobs = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    base_model = ModelSummarySerializer(read_only=True, allow_null=True)
    result_model = ModelSummarySerializer(
        read_only=True,
        allow_null=True,
        help_text="The registered classifier it made; choose it for new jobs and re-runs.",
    )

    class Meta:
        model = TrainingJob
        ref_name = "TrainingJob"
        fields = [
            "id", "name", "status", "source", "jobs", "base_model", "backbone", "epochs", "refine_rounds",
            "progress", "history", "data_summary", "error", "cancel_requested", "result_model",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip


class TrainingJobListCreateApi(APIView):
    pagination_class = Pagination

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TrainingJobCreate"

        name = serializers.CharField(required=False, allow_blank=True, max_length=200)
        source = serializers.ChoiceField(
            choices=TrainingJob.Source.values,
            default=TrainingJob.Source.CELLS,
            help_text="cells: annotated cells (cell-level labels); jobs: fields uploaded with labels (weak); both.",
        )
        jobs = serializers.ListField(child=ObjectIdField(), help_text="Jobs to take cells and labels from.")
        base_model = ObjectIdField(
            required=False, allow_null=True, default=None, help_text="A classifier to fine-tune (GET /api/models/)."
        )
        backbone = serializers.CharField(
            required=False, allow_blank=True, default="", help_text="Without base_model: compact or a timm name."
        )
        epochs = serializers.IntegerField(required=False, default=6)
        refine_rounds = serializers.IntegerField(required=False, default=1)

    @extend_schema(summary="List your training jobs", responses=TrainingJobOutputSerializer(many=True))
    def get(self, request):
        return _paginated(
            self, request, training_jobs.training_job_list(user=request.user), TrainingJobOutputSerializer
        )

    @extend_schema(
        summary="Train a classifier from annotated cells, labelled jobs or both",
        description="Runs on the training queue; poll the job for its progress. The result is registered as a "
        "private classifier of yours.",
        request=InputSerializer,
        responses={
            201: TrainingJobOutputSerializer,
            400: OpenApiResponse(description="Nothing usable to train on, or an unknown job or model."),
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            training_job = training_jobs.training_job_create(
                owner=request.user,
                job_ids=data["jobs"],
                source=data["source"],
                name=data.get("name", ""),
                base_model_id=data["base_model"],
                backbone=data["backbone"],
                epochs=data["epochs"],
                refine_rounds=data["refine_rounds"],
            )
        except DjangoValidationError as exc:
            raise ApiValidationError({"detail": " ".join(exc.messages)}) from None
        training_job.refresh_from_db()
        return Response(TrainingJobOutputSerializer(training_job).data, status=status.HTTP_201_CREATED)


class TrainingJobDetailApi(APIView):
    @extend_schema(
        summary="Read a training job: status, progress, error, resulting model", responses=TrainingJobOutputSerializer
    )
    def get(self, request, training_job_id: int):
        training_job = training_jobs.training_job_get(user=request.user, training_job_id=training_job_id)
        return Response(TrainingJobOutputSerializer(training_job).data)


class TrainingJobCancelApi(APIView):
    @extend_schema(
        summary="Cancel a queued or running training job",
        request=None,
        responses={200: TrainingJobOutputSerializer, 409: OpenApiResponse(description="It has finished.")},
    )
    def post(self, request, training_job_id: int):
        training_job = training_jobs.training_job_get(user=request.user, training_job_id=training_job_id)
        try:
            training_job = training_jobs.training_job_cancel(user=request.user, training_job=training_job)
        except DjangoValidationError as exc:
            return _conflict_or_invalid(exc)
        return Response(TrainingJobOutputSerializer(training_job).data)
