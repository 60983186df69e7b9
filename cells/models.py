"""A job holds one or more fields of view; each field holds the cells found in it.

Classifiers are rows of the model registry (`RegisteredModel`); every field and cell names the
one that made its current predictions, and `FieldPrediction` / `CellPrediction` keep the
predictions of every model a field was run with.
"""

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse

from ml.constants import CHANNELS, CLASS_NAMES


def _field_upload_path(instance: "Field", filename: str) -> str:
    return f"fields/{instance.job_id}/{instance.uid}/{filename}"


def _field_image_path(instance: "FieldImage", filename: str) -> str:
    return f"fields/{instance.field.job_id}/{instance.field.uid}/viewer/{filename}"


def _cell_thumbnail_path(instance: "Cell", filename: str) -> str:
    return f"fields/{instance.field.job_id}/{instance.field.uid}/cells/{filename}"


def _model_file_path(instance: "RegisteredModel", filename: str) -> str:
    return f"models/{instance.sha256[:16]}/{filename}"


def _model_cell_file_path(instance: "RegisteredModel", filename: str) -> str:
    return f"models/{instance.cell_sha256[:16]}/{filename}"


# A job segmented by a registered nucleus + cell package pair names it "model:<id>" as its backend.
SEGMENTER_BACKEND_PREFIX = "model:"


def segmenter_model_id(backend: str) -> int | None:
    """The registry id a segmentation backend name such as "model:12" names; None for a builtin backend."""
    number = backend.removeprefix(SEGMENTER_BACKEND_PREFIX)
    return int(number) if backend.startswith(SEGMENTER_BACKEND_PREFIX) and number.isdigit() else None


class RegisteredModel(models.Model):
    """A model the installation can run: its file, what it is, and how far to trust it.

    A classifier is one file; a segmenter is a pair of bioimage.io packages, the nucleus one in
    `file` and the cell one in `cell_file`.
    """

    class Kind(models.TextChoices):
        CLASSIFIER = "classifier", "Classifier"
        SEGMENTER = "segmenter", "Segmenter"

    class Format(models.TextChoices):
        HPAWEB = "hpaweb", "hpaweb checkpoint"
        BIOIMAGEIO = "bioimage.io", "bioimage.io package"
        CLASSICAL = "hpaweb-classical", "classical classifier (skops)"

    class Visibility(models.TextChoices):
        PRIVATE = "private", "Private (its owner only)"
        SHARED = "shared", "Shared (every user)"

    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.CLASSIFIER)
    name = models.CharField(max_length=200)
    version = models.CharField(max_length=50, default="1")
    file = models.FileField(upload_to=_model_file_path, blank=True, help_text="An imported model's file.")
    cell_file = models.FileField(
        upload_to=_model_cell_file_path, blank=True, help_text="A segmenter's cell package (`file` is its nucleus one)."
    )
    source_path = models.CharField(
        max_length=500, blank=True, help_text="A model the installation provides (the shipped one, ML_MODEL_PATH)."
    )
    sha256 = models.CharField(max_length=64)
    cell_sha256 = models.CharField(max_length=64, blank=True, help_text="A segmenter's cell package's hash.")
    format = models.CharField(max_length=20, choices=Format.choices, default=Format.HPAWEB)
    architecture = models.CharField(max_length=200, blank=True)
    class_names = models.JSONField(default=list, blank=True)
    class_mapping = models.JSONField(default=dict, blank=True, help_text="Output index -> class name, if given.")
    input_size_px = models.PositiveIntegerField(null=True, blank=True)
    normalisation = models.JSONField(default=dict, blank=True, help_text='{"mean": [...], "std": [...]}')
    metrics = models.JSONField(default=dict, blank=True, help_text="Validation metrics, as the model carries them.")
    training_data = models.JSONField(default=dict, blank=True, help_text="A description of its training data.")
    summary = models.CharField(max_length=500, blank=True, help_text="The one line of its card that matters.")
    card = models.TextField(blank=True, help_text="The model card, markdown.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="models"
    )
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.SHARED)
    is_default = models.BooleanField(default=False, help_text="The installation's default model of its kind.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "name", "version", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "sha256", "cell_sha256", "owner"], name="unique_model_files_per_owner"
            ),
            models.UniqueConstraint(
                fields=["kind"], condition=models.Q(is_default=True), name="one_default_model_per_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    def get_absolute_url(self) -> str:
        return reverse("model-detail", args=[self.pk])

    @property
    def label(self) -> str:
        """How pages name the model: name and version ("v1.2"; a word such as "unversioned" in brackets)."""
        return f"{self.name} v{self.version}" if self.version[:1].isdigit() else f"{self.name} ({self.version})"

    @property
    def segmentation_backend(self) -> str:
        """What a job segmented by this pair stores as its backend."""
        return f"{SEGMENTER_BACKEND_PREFIX}{self.pk}"

    def stored_files(self) -> list[models.fields.files.FieldFile]:
        return [stored for stored in (self.file, self.cell_file) if stored]


class Job(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    name = models.CharField(max_length=200, blank=True)
    segmentation_backend = models.CharField(max_length=20)
    classifier = models.ForeignKey(
        RegisteredModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs",
        help_text="The classifier the job's fields are run with.",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    pixel_size_um = models.FloatField(
        null=True,
        blank=True,
        help_text="Microns per pixel of the job's fields, if given; sets the segmentation's scale.",
    )
    nucleus_diameter_px = models.FloatField(
        null=True, blank=True, help_text="Typical nucleus diameter in pixels, if given; sets the segmentation's scale."
    )
    channel_mapping = models.JSONField(
        default=dict, blank=True, help_text="OME-TIFF channel name -> red/green/blue/yellow, if given."
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name or f"Job {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("job-detail", args=[self.pk])


class Field(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SEGMENTING = "segmenting", "Segmenting"
        CLASSIFYING = "classifying", "Classifying"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    FINISHED = (Status.DONE, Status.FAILED)

    uid = models.UUIDField(default=uuid.uuid4, editable=False, unique=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="fields")
    name = models.CharField(max_length=200, help_text="The field's image ID, as in {ID}_green.png.")
    red = models.FileField(upload_to=_field_upload_path, blank=True)
    green = models.FileField(upload_to=_field_upload_path, blank=True)
    blue = models.FileField(upload_to=_field_upload_path, blank=True)
    yellow = models.FileField(upload_to=_field_upload_path, blank=True)
    multichannel = models.FileField(upload_to=_field_upload_path, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bit_depth = models.PositiveSmallIntegerField()

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0, help_text="Fraction of the field's work done, 0 to 1.")
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)

    segmentation_backend = models.CharField(max_length=20, blank=True)
    channels_used = models.JSONField(default=list, blank=True)
    model_name = models.CharField(max_length=200, blank=True, help_text="Empty when no trained model made predictions.")
    classifier = models.ForeignKey(
        RegisteredModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="The classifier that made the current predictions.",
    )  # fmt: skip
    image_probabilities = models.JSONField(null=True, blank=True)
    image_labels = models.JSONField(
        null=True, blank=True, help_text="The field's known classes (0..18), as given at upload; null when none."
    )
    unfamiliar_share = models.FloatField(
        null=True, blank=True, help_text="Share of the cells unlike the classifier's training cells."
    )
    nuclei_labels = models.FileField(upload_to=_field_upload_path, blank=True)
    cell_labels = models.FileField(upload_to=_field_upload_path, blank=True)
    preview = models.FileField(upload_to=_field_upload_path, blank=True)
    timings_s = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="unique_field_name_per_job")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("field-detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def missing_reference_channels(self) -> list[str]:
        """The reference channels (red, yellow) the field was uploaded without."""
        if self.multichannel:
            return []
        return [channel for channel in ("red", "yellow") if not getattr(self, channel)]

    def channel_files(self) -> dict[str, models.fields.files.FieldFile]:
        return {channel: getattr(self, channel) for channel in CHANNELS if getattr(self, channel)}

    def stored_files(self) -> list[models.fields.files.FieldFile]:
        """Every file the field owns: inputs, label images, preview (viewer images and thumbnails have their own rows)."""
        names = (*CHANNELS, "multichannel", "nuclei_labels", "cell_labels", "preview")
        return [getattr(self, name) for name in names if getattr(self, name)]


class FieldImage(models.Model):
    """A picture the field viewer shows, at reduced resolution (longer side at most 1536 px)."""

    class Kind(models.TextChoices):
        RED = "red", "Red channel"
        GREEN = "green", "Green channel"
        BLUE = "blue", "Blue channel"
        YELLOW = "yellow", "Yellow channel"
        CELL_OUTLINES = "cell-outlines", "Cell outlines"
        NUCLEUS_OUTLINES = "nucleus-outlines", "Nucleus outlines"
        CELL_IDS = "cell-ids", "Cell ids (RGB-encoded)"

    field = models.ForeignKey(Field, on_delete=models.CASCADE, related_name="images")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    file = models.FileField(upload_to=_field_image_path)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()

    class Meta:
        ordering = ["field_id", "kind"]
        constraints = [models.UniqueConstraint(fields=["field", "kind"], name="unique_image_kind_per_field")]

    def __str__(self) -> str:
        return f"{self.field.name} {self.kind}"


class Cell(models.Model):
    field = models.ForeignKey(Field, on_delete=models.CASCADE, related_name="cells")
    label = models.PositiveIntegerField(help_text="The cell's id in the field's cell label image.")
    min_row = models.PositiveIntegerField()
    min_col = models.PositiveIntegerField()
    max_row = models.PositiveIntegerField()
    max_col = models.PositiveIntegerField()
    area_px = models.PositiveIntegerField()
    mask_rle = models.JSONField(help_text="COCO compressed RLE of the cell mask.")
    nucleus_rle = models.JSONField(help_text="COCO compressed RLE of the nucleus mask.")
    probabilities = models.JSONField(null=True, blank=True, help_text="19 class confidences; null without a model.")
    top_class = models.PositiveSmallIntegerField(null=True, blank=True)
    top_confidence = models.FloatField(null=True, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    classifier = models.ForeignKey(RegisteredModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    familiarity = models.FloatField(
        null=True, blank=True, help_text="How like the classifier's training cells, 0 to 1; null where it cannot say."
    )
    unfamiliar = models.BooleanField(null=True, blank=True, help_text="Familiarity below the classifier's threshold.")
    thumbnail = models.FileField(
        upload_to=_cell_thumbnail_path, blank=True, help_text="The cell centred on its neighbours, dimmed."
    )
    measurements = models.JSONField(
        null=True, blank=True, help_text="Shape, intensity and texture by name (ml.measure); null when not measured."
    )
    qc_flags = models.JSONField(
        default=list, blank=True, help_text="Quality-control flags (ml.qc.QC_FLAGS) that apply."
    )

    class Meta:
        ordering = ["field_id", "label"]
        constraints = [models.UniqueConstraint(fields=["field", "label"], name="unique_cell_label_per_field")]
        indexes = [models.Index(fields=["field", "top_class", "top_confidence"])]

    def __str__(self) -> str:
        return f"{self.field.name} cell {self.label}"

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return (self.min_row, self.min_col, self.max_row, self.max_col)


class FieldPrediction(models.Model):
    """A field's predictions by one classifier; kept when the field is run again with another."""

    field = models.ForeignKey(Field, on_delete=models.CASCADE, related_name="predictions")
    classifier = models.ForeignKey(RegisteredModel, on_delete=models.SET_NULL, null=True, related_name="+")
    model_name = models.CharField(max_length=200)
    model_version = models.CharField(max_length=50)
    image_probabilities = models.JSONField()
    unfamiliar_share = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["field_id", "created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["field", "classifier"], name="one_prediction_per_model")]


class CellPrediction(models.Model):
    """A cell's probabilities by one classifier (`FieldPrediction` holds the field's)."""

    prediction = models.ForeignKey(FieldPrediction, on_delete=models.CASCADE, related_name="cells")
    cell = models.ForeignKey(Cell, on_delete=models.CASCADE, related_name="predictions")
    probabilities = models.JSONField()
    top_class = models.PositiveSmallIntegerField()
    top_confidence = models.FloatField()
    familiarity = models.FloatField(null=True, blank=True)
    unfamiliar = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["prediction_id", "cell_id"]
        constraints = [models.UniqueConstraint(fields=["prediction", "cell"], name="one_cell_prediction_per_model")]


# Curation: what users teach the model (annotations, mask fixes, training jobs) and who may use which job.


class JobShare(models.Model):
    """A job an administrator shared with another user, whose annotations and labels that user may train on."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="shares")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shared_jobs")
    shared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "user"], name="one_share_per_job_and_user")]

    def __str__(self) -> str:
        return f"{self.job} shared with {self.user}"


class CellAnnotation(models.Model):
    """One user's call on one cell: its classes, or that it is not a cell or badly outlined.

    It names the cell by field and label, and by the digest of the mask it was made on: a mask fix
    detaches it (`cell` null) and undoing the fix attaches it again. The newest annotation of a cell
    that is not undone is the cell's current one.
    """

    class Kind(models.TextChoices):
        CLASSES = "classes", "Classes"
        NOT_A_CELL = "not_a_cell", "Not a cell"
        BADLY_OUTLINED = "badly_outlined", "Badly outlined"

    field = models.ForeignKey(Field, on_delete=models.CASCADE, related_name="annotations")
    cell = models.ForeignKey(Cell, on_delete=models.SET_NULL, null=True, blank=True, related_name="annotations")
    cell_label = models.PositiveIntegerField()
    mask_digest = models.CharField(max_length=64, help_text="sha256 of the cell's mask RLE when it was annotated.")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.CLASSES)
    classes = models.JSONField(default=list, blank=True, help_text="Class indices 0..18 (kind classes).")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    corrected_model = models.ForeignKey(
        RegisteredModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="The classifier whose prediction this corrected.",
    )  # fmt: skip
    corrected_model_name = models.CharField(max_length=260, blank=True)
    corrected_probabilities = models.JSONField(null=True, blank=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["field", "cell_label"], name="cells_annot_field_label_idx")]

    def __str__(self) -> str:
        return f"{self.field.name} cell {self.cell_label}: {self.kind}"

    @property
    def class_names(self) -> list[str]:
        return [CLASS_NAMES[index] for index in self.classes]


def _mask_edit_path(instance: "MaskEdit", filename: str) -> str:
    return f"fields/{instance.field.job_id}/{instance.field.uid}/edits/{filename}"


class MaskEdit(models.Model):
    """A mask fix on a field (delete, merge, split) with the label images from before it, for undo."""

    class Kind(models.TextChoices):
        DELETE = "delete", "Delete a cell"
        MERGE = "merge", "Merge two cells"
        SPLIT = "split", "Split a cell"

    field = models.ForeignKey(Field, on_delete=models.CASCADE, related_name="mask_edits")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    cell_labels_before = models.FileField(upload_to=_mask_edit_path)
    nuclei_labels_before = models.FileField(upload_to=_mask_edit_path)
    details = models.JSONField(default=dict, blank=True, help_text="The cells and line of the fix.")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.field.name}: {self.kind}"


class TrainingJob(models.Model):
    """Training a classifier from the product: its data, starting point, live progress and result."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Source(models.TextChoices):
        CELLS = "cells", "Annotated cells (cell-level labels)"
        JOBS = "jobs", "Labelled jobs (image-level labels, weak)"
        BOTH = "both", "Both"

    FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="training_jobs")
    name = models.CharField(max_length=200)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.CELLS)
    jobs = models.ManyToManyField(Job, related_name="training_jobs", blank=True)
    base_model = models.ForeignKey(
        RegisteredModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="The classifier fine-tuned; empty: trained from the backbone.",
    )  # fmt: skip
    backbone = models.CharField(max_length=100, blank=True)
    epochs = models.PositiveSmallIntegerField(default=6)
    refine_rounds = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress = models.JSONField(default=dict, blank=True, help_text="epoch, epochs, loss, validation score, stage.")
    history = models.JSONField(default=list, blank=True)
    data_summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    result_model = models.ForeignKey(
        RegisteredModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="training_jobs"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("training-detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED
