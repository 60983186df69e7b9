from django import forms

from cells import ml_config, registry
from cells.models import Job, RegisteredModel, TrainingJob
from ml.constants import CLASS_NAMES
from ml.io import InputError, parse_channel_mapping
from ml.qc import QC_DESCRIPTIONS


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Any number of files under one name (Django's FileField takes one)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, (list, tuple)) else [data] if data else []
        return [super(MultipleFileField, self).clean(one, initial) for one in files]


class JobUploadForm(forms.Form):
    """A job from dropped files (channel files, multi-channel TIFFs, zips) and/or one field's channel slots.

    The files themselves are read from request.FILES by `cells.uploads.request_uploads`.
    """

    name = forms.CharField(label="Job name", max_length=200, required=False)
    files = MultipleFileField(
        label="Files",
        required=False,
        widget=MultipleFileInput(attrs={"accept": ".png,.tif,.tiff,.zip"}),
        help_text="Channel files named ID_red.png, ID_green.png, ID_blue.png, ID_yellow.png (PNG or TIFF), "
        "multi-channel TIFFs, or zips of fields in that layout.",
    )
    assignments = forms.CharField(required=False, widget=forms.HiddenInput)
    # The relative path of each file of a folder upload, in order (JSON); upload.js fills it in.
    paths = forms.CharField(required=False, widget=forms.HiddenInput)
    field_name = forms.CharField(
        label="Field ID",
        max_length=200,
        required=False,
        help_text="For the channel slots below; taken from file names such as ID_green.png when left empty.",
    )
    green = forms.FileField(label="Green: protein of interest", required=False)
    blue = forms.FileField(label="Blue: nucleus", required=False)
    red = forms.FileField(label="Red: microtubules (optional)", required=False)
    yellow = forms.FileField(label="Yellow: endoplasmic reticulum (optional)", required=False)
    labels = forms.CharField(
        label="Known labels (optional)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "plate1-A3,0|16"}),
        help_text="One line per field: its ID, a comma, and its classes (numbers 0 to 18 or names) joined by '|'. "
        "A train.csv inside a zip is read too.",
    )
    labels_file = forms.FileField(
        label="Labels CSV (optional)",
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": ".csv"}),
        help_text="A CSV with the columns ID,Label, as the Kaggle train.csv.",
    )
    segmentation_backend = forms.ChoiceField(label="Segmentation", choices=[])
    pixel_size_um = forms.FloatField(
        label="Pixel size (µm per pixel, optional)",
        required=False,
        min_value=0.001,
        help_text="Sets the scale segmentation works at; estimated from the image when left empty.",
    )
    nucleus_diameter_px = forms.FloatField(
        label="Nucleus diameter (pixels, optional)",
        required=False,
        min_value=1.0,
        help_text="The typical nucleus's diameter; used instead of the pixel size when both are given.",
    )
    channel_mapping = forms.CharField(
        label="OME-TIFF channel mapping (optional)",
        required=False,
        help_text='For OME-TIFFs whose channel names are not recognised: {"DAPI": "blue", "Alexa 488": "green"}.',
    )
    classifier = forms.ModelChoiceField(
        label="Classifier",
        queryset=RegisteredModel.objects.none(),
        required=False,
        empty_label="None: segment only",
        help_text="Each model's card says what it was trained on and how far to trust it (Models page).",
    )

    def clean_channel_mapping(self) -> dict[str, str]:
        try:
            return parse_channel_mapping(self.cleaned_data.get("channel_mapping") or "")
        except InputError as error:
            raise forms.ValidationError(str(error)) from None

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["segmentation_backend"].initial = ml_config.default_segmentation_backend()
        if user is not None:
            self.fields["segmentation_backend"].choices = registry.segmentation_choices(user)
            self.fields["classifier"].queryset = registry.classifiers_for(user)
            self.fields["classifier"].label_from_instance = lambda model: (
                f"{model.name} v{model.version} — {model.summary}"
            )
            default = registry.classifier_default()
            self.fields["classifier"].initial = default.pk if default else None


class ModelImportForm(forms.Form):
    file = forms.FileField(
        label="Model file",
        help_text="An hpaweb checkpoint (.pt), a classical classifier (.skops) or a bioimage.io package (.zip with "
        "rdf.yaml, TorchScript or ONNX weights).",
        widget=forms.ClearableFileInput(attrs={"accept": ".pt,.skops,.zip"}),
    )
    visibility = forms.ChoiceField(label="Who may use it", choices=RegisteredModel.Visibility.choices)
    class_mapping = forms.CharField(
        label="Class mapping (optional)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text='For packages whose outputs are not named after the HPA classes: {"0": "Nucleoplasm", ...}.',
    )


class SegmenterImportForm(forms.Form):
    """A nucleus and a cell bioimage.io segmentation package, registered as one segmentation for jobs."""

    nuclei_file = forms.FileField(
        label="Nucleus package",
        help_text="A bioimage.io segmentation package (.zip) that finds nuclei in the blue channel.",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip"}),
    )
    cell_file = forms.FileField(
        label="Cell package",
        help_text="A bioimage.io segmentation package (.zip) that finds cells in the red, yellow and blue channels.",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip"}),
    )
    name = forms.CharField(
        label="Name (optional)", max_length=200, required=False, help_text="Taken from the packages when left empty."
    )
    visibility = forms.ChoiceField(label="Who may use it", choices=RegisteredModel.Visibility.choices)


class GalleryFilterForm(forms.Form):
    ORDERS = [
        ("-confidence", "Confidence, highest first"),
        ("confidence", "Confidence, lowest first"),
        ("field", "Field and cell id"),
    ]

    class_index = forms.TypedChoiceField(
        label="Class",
        choices=[("", "Any class (top prediction)")] + [(str(index), name) for index, name in enumerate(CLASS_NAMES)],
        coerce=int,
        empty_value=None,
        required=False,
    )
    DEFAULT_MIN_CONFIDENCE = 0.5

    min_confidence = forms.FloatField(
        label="Minimum confidence",
        min_value=0.0,
        max_value=1.0,
        required=False,
        initial=DEFAULT_MIN_CONFIDENCE,
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    order = forms.ChoiceField(label="Sort by", choices=ORDERS, required=False, initial="-confidence")
    familiarity = forms.ChoiceField(
        label="Cells",
        choices=[("", "All cells"), ("unfamiliar", "Unfamiliar to the model only"), ("familiar", "Familiar only")],
        required=False,
    )
    qc = forms.ChoiceField(
        label="Quality",
        choices=[("", "All cells"), ("clean", "Without quality flags"), ("flagged", "Flagged only")]
        + [(name, f"{description} only") for name, description in QC_DESCRIPTIONS.items()],
        required=False,
    )
    field_labels = forms.ChoiceField(
        label="Known labels",
        choices=[
            ("", "Any cell"),
            ("shows", "Shows one of its field's labels"),
            ("misses", "Does not show its field's labels"),
        ],
        required=False,
        help_text="For fields uploaded with labels: at the minimum confidence.",
    )

    @classmethod
    def defaults(cls) -> dict:
        return {
            "class_index": None,
            "min_confidence": cls.DEFAULT_MIN_CONFIDENCE,
            "order": "-confidence",
            "familiarity": "",
            "qc": "",
            "field_labels": "",
        }

    def clean(self):
        data = super().clean()
        if data.get("min_confidence") is None:
            data["min_confidence"] = self.DEFAULT_MIN_CONFIDENCE
        data["order"] = data.get("order") or "-confidence"
        return data


class CropsExportForm(forms.Form):
    """Which cells' crops to download: a gallery's filters, one field, or chosen cells, and the image format."""

    image_format = forms.ChoiceField(
        label="Format",
        choices=[("png", "PNG, one file per channel"), ("tiff", "TIFF, 4 planes per cell")],
        required=False,
    )
    class_index = forms.TypedChoiceField(
        choices=[(str(index), name) for index, name in enumerate(CLASS_NAMES)],
        coerce=int,
        empty_value=None,
        required=False,
    )
    min_confidence = forms.FloatField(min_value=0.0, max_value=1.0, required=False)
    familiarity = forms.ChoiceField(choices=[("", ""), ("unfamiliar", ""), ("familiar", "")], required=False)
    field = forms.IntegerField(min_value=1, required=False)
    cells = forms.RegexField(
        regex=r"^\d+(,\d+)*$",
        required=False,
        error_messages={"invalid": "List the cells as numbers separated by commas, such as 3,7,12."},
    )

    def clean(self):
        data = super().clean()
        data["image_format"] = data.get("image_format") or "png"
        data["cells"] = [int(part) for part in data["cells"].split(",")] if data.get("cells") else []
        return data


class TrainingJobForm(forms.Form):
    """The "Train a model" form: which jobs' annotated cells and labels, and where to start from."""

    BACKBONES = [
        ("compact", "Compact CNN (fast on a CPU)"),
        ("efficientnet_lite0", "EfficientNet-Lite0"),
        ("resnet18", "ResNet-18"),
    ]

    name = forms.CharField(label="Model name", max_length=200, required=False)
    source = forms.ChoiceField(label="Train from", choices=TrainingJob.Source.choices, initial="cells")
    jobs = forms.ModelMultipleChoiceField(
        label="Jobs",
        queryset=Job.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="Your jobs, and jobs an administrator shared with you.",
    )
    base_model = forms.ModelChoiceField(
        label="Start from",
        queryset=RegisteredModel.objects.none(),
        required=False,
        empty_label="A new network (choose its backbone below)",
        help_text="Fine-tuning a model you trust needs fewer cells.",
    )
    backbone = forms.ChoiceField(label="Backbone (new network only)", choices=BACKBONES, initial="compact")
    epochs = forms.IntegerField(label="Epochs", min_value=1, max_value=50, initial=6)
    refine_rounds = forms.IntegerField(
        label="Refinement rounds (labelled jobs)",
        min_value=0,
        max_value=3,
        initial=1,
        help_text="Relabel the cells of labelled fields with the model's own predictions and train again, as ml train does.",
    )

    def __init__(self, *args, user=None, jobs=None, **kwargs):
        super().__init__(*args, **kwargs)
        if jobs is not None:
            self.fields["jobs"].queryset = jobs
        if user is not None:
            self.fields["base_model"].queryset = registry.classifiers_for(user).filter(
                format=RegisteredModel.Format.HPAWEB
            )
            self.fields["base_model"].label_from_instance = lambda model: f"{model.label} — {model.summary}"
