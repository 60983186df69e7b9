from django import forms

from cells import ml_config
from ml.constants import CLASS_NAMES
from ml.segmentation import BACKENDS


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
    segmentation_backend = forms.ChoiceField(label="Segmentation", choices=[(b, b) for b in BACKENDS])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["segmentation_backend"].initial = ml_config.default_segmentation_backend()


class GalleryFilterForm(forms.Form):
    ORDERS = [
        ("confidence", "Confidence, highest first"),
        ("-confidence", "Confidence, lowest first"),
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
    order = forms.ChoiceField(label="Sort by", choices=ORDERS, required=False, initial="confidence")

    @classmethod
    def defaults(cls) -> dict:
        return {"class_index": None, "min_confidence": cls.DEFAULT_MIN_CONFIDENCE, "order": "confidence"}

    def clean(self):
        data = super().clean()
        if data.get("min_confidence") is None:
            data["min_confidence"] = self.DEFAULT_MIN_CONFIDENCE
        data["order"] = data.get("order") or "confidence"
        return data
