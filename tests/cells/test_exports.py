import csv
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from cells import exports, intake, processing
from cells.models import Cell
from cells.uploads import FieldUpload
from ml.constants import CLASS_NAMES, NUM_CLASSES
from ml.encoding import decode_kaggle_mask, parse_prediction_string

pytestmark = pytest.mark.django_db


def _probabilities(label: int) -> list[float]:
    """Cell i is most confident in class i (0.9), has 0.6 for class 18 and 0.01 elsewhere."""
    values = [0.01] * NUM_CLASSES
    values[NUM_CLASSES - 1] = 0.6
    values[label] = 0.9
    return values


@pytest.fixture
def classified_job(owner, channel_uploads, ml_settings):
    """A job of two processed 256 px fields (4 cells each) whose cells carry known probabilities."""
    ml_settings.ML_MODEL_PATH = ""
    job = intake.job_create(
        owner=owner,
        uploads=[
            FieldUpload(name=name, channel_files=channel_uploads(field_id=name, size_px=256)) for name in ("f1", "f2")
        ],
        name="exports",
    )
    for field in job.fields.all():
        processing.field_process(field_id=field.pk)
    for cell in Cell.objects.filter(field__job=job):
        probabilities = _probabilities(cell.label)
        Cell.objects.filter(pk=cell.pk).update(probabilities=probabilities, top_class=cell.label, top_confidence=0.9)
    return job


def _text(chunks) -> str:
    return "".join(chunks)


def _labels(stored) -> np.ndarray:
    with stored.open("rb") as handle:
        return np.asarray(Image.open(handle))


def test_submission_csv_has_a_row_per_field_with_every_class_of_every_cell(classified_job):
    rows = list(csv.DictReader(io.StringIO(_text(exports.submission_csv(job=classified_job)))))
    assert [(r["ID"], r["ImageWidth"], r["ImageHeight"]) for r in rows] == [("f1", "256", "256"), ("f2", "256", "256")]
    field = classified_job.fields.get(name="f1")
    cell_labels = _labels(field.cell_labels)
    triples = parse_prediction_string(rows[0]["PredictionString"])
    assert len(triples) == 4 * NUM_CLASSES
    for label, confidence, mask in triples[:NUM_CLASSES]:
        assert confidence == _probabilities(1)[label]
        assert np.array_equal(decode_kaggle_mask(mask, height=256, width=256), cell_labels == 1)


def test_coco_json_loads_in_pycocotools_with_masks_equal_to_the_label_image(classified_job, tmp_path):
    path = tmp_path / "coco.json"
    path.write_text(_text(exports.coco_json(job=classified_job, min_confidence=0.5)))
    coco = COCO(str(path))
    assert [category["name"] for category in coco.loadCats(coco.getCatIds())] == list(CLASS_NAMES)
    field = classified_job.fields.get(name="f2")
    assert [(c["id"], c["hpa_label"]) for c in coco.loadCats(coco.getCatIds())][:2] == [(1, 0), (2, 1)]
    assert coco.imgs[field.pk] == {
        "id": field.pk,
        "file_name": "f2_green.png",
        "channel_files": ["f2_blue.png", "f2_green.png", "f2_red.png", "f2_yellow.png"],
        "width": 256,
        "height": 256,
        "model": "",
        "model_version": "",
        "segmentation_backend": "classical",
        "channels_used": ["blue", "red", "yellow"],
        "unfamiliar_share": None,
    }
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[field.pk]))
    # Per cell: its own class (0.9) and Negative (0.6) reach 0.5.
    assert sorted((a["cell_id"], a["category_id"], a["hpa_label"], a["score"]) for a in annotations) == [
        (label, class_index + 1, class_index, score)
        for label in (1, 2, 3, 4)
        for class_index, score in ((label, 0.9), (18, 0.6))
    ]
    cell_labels = _labels(field.cell_labels)
    for annotation in annotations:
        mask = cell_labels == annotation["cell_id"]
        rows, cols = np.nonzero(mask)
        assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)
        assert annotation["bbox"] == [cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()]
        assert annotation["area"] == int(mask.sum()) and annotation["iscrowd"] == 0
    assert len({a["id"] for a in coco.dataset["annotations"]}) == len(coco.dataset["annotations"]) == 16


def test_coco_json_without_threshold_has_every_class_and_skips_unclassified_cells(classified_job):
    Cell.objects.filter(field__name="f2").update(probabilities=None, top_class=None, top_confidence=None)
    document = json.loads(_text(exports.coco_json(job=classified_job)))
    assert len(document["images"]) == 2
    assert len(document["annotations"]) == 4 * NUM_CLASSES
    assert {a["image_id"] for a in document["annotations"]} == {classified_job.fields.get(name="f1").pk}


def test_cells_csv_lists_box_area_and_the_19_confidences(classified_job):
    rows = list(csv.reader(io.StringIO(_text(exports.cells_csv(job=classified_job)))))
    assert rows[0] == [
        "field",
        "cell_id",
        "min_row",
        "min_col",
        "max_row",
        "max_col",
        "area_px",
        *CLASS_NAMES,
        "model_name",
        "model_version",
        "familiarity",
        "unfamiliar",
        "qc_flags",
    ]
    assert len(rows) == 1 + 8
    cell = Cell.objects.get(field__name="f2", label=3)
    row = next(r for r in rows if r[:2] == ["f2", "3"])
    assert row[2:7] == [str(v) for v in (*cell.bbox, cell.area_px)]
    assert [float(v) for v in row[7 : 7 + NUM_CLASSES]] == _probabilities(3)
    # Probabilities made by hand here: no model, no familiarity; the quality flags processing gave.
    assert row[7 + NUM_CLASSES :] == ["", "", "", "", "|".join(cell.qc_flags)]


def test_labels_zip_holds_the_16_bit_label_images_of_every_field(classified_job):
    buffer = io.BytesIO()
    exports.write_labels_zip(job=classified_job, out=buffer)
    with zipfile.ZipFile(buffer) as archive:
        assert sorted(archive.namelist()) == [
            "f1_cells.png",
            "f1_nuclei.png",
            "f2_cells.png",
            "f2_nuclei.png",
            "manifest.json",
        ]
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["job"] == {"id": classified_job.pk, "name": "exports"}
        assert [(f["name"], f["cells"], f["nuclei"], f["cell_count"]) for f in manifest["fields"]] == [
            ("f1", "f1_cells.png", "f1_nuclei.png", 4),
            ("f2", "f2_cells.png", "f2_nuclei.png", 4),
        ]
        assert manifest["segmentation_backend"] == "classical" and manifest["model"] == ""
        with archive.open("f1_cells.png") as handle:
            image = Image.open(handle)
            assert image.mode in ("I;16", "I")
            cells = np.asarray(image)
    assert np.array_equal(cells, _labels(classified_job.fields.get(name="f1").cell_labels))
    assert set(np.unique(cells)) == {0, 1, 2, 3, 4}


def test_exports_of_a_job_not_processed_yet_are_empty_but_well_formed(owner, channel_uploads):
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=256))])
    assert _text(exports.submission_csv(job=job)) == "ID,ImageWidth,ImageHeight,PredictionString\nf1,256,256,\n"
    assert json.loads(_text(exports.coco_json(job=job)))["annotations"] == []
    assert _text(exports.cells_csv(job=job)).count("\n") == 1


@pytest.fixture
def modelled_job(owner, channel_uploads, ml_settings, tiny_classifier_file):
    """A job processed by a registered (tiny) classifier."""
    ml_settings.ML_MODEL_PATH = str(tiny_classifier_file)
    job = intake.job_create(
        owner=owner, uploads=[FieldUpload(name="g1", channel_files=channel_uploads(field_id="g1", size_px=256))]
    )
    processing.field_process(field_id=job.fields.get().pk)
    return job


def test_exports_name_the_model_that_made_them(modelled_job):
    model = modelled_job.classifier
    assert (model.name, model.version) == ("tiny-classifier", "1")
    assert exports.export_filename(job=modelled_job, suffix="submission.csv") == (
        f"job-{modelled_job.pk}-tiny-classifier-v1-submission.csv"
    )
    rows = list(csv.reader(io.StringIO(_text(exports.cells_csv(job=modelled_job)))))
    assert {tuple(row[7 + NUM_CLASSES : 9 + NUM_CLASSES]) for row in rows[1:]} == {("tiny-classifier", "1")}
    info = json.loads(_text(exports.coco_json(job=modelled_job)))["info"]
    assert (info["model"], info["model_version"], info["segmentation_backend"]) == ("tiny-classifier", "1", "classical")
    assert info["channels_used"] == ["blue", "red", "yellow"] and info["models"] == ["tiny-classifier 1"]
    assert info["date_created"]


def test_the_kaggle_csv_keeps_its_exact_columns_with_a_model(modelled_job):
    text = _text(exports.submission_csv(job=modelled_job))
    assert text.splitlines()[0] == "ID,ImageWidth,ImageHeight,PredictionString"


def test_coco_json_leaves_out_scores_below_its_documented_default(classified_job):
    cell = Cell.objects.filter(field__job=classified_job, field__name="f1").order_by("label").first()
    probabilities = list(cell.probabilities)
    probabilities[5] = 0.001
    Cell.objects.filter(pk=cell.pk).update(probabilities=probabilities)
    default = json.loads(_text(exports.coco_json(job=classified_job)))["annotations"]
    everything = json.loads(_text(exports.coco_json(job=classified_job, min_confidence=0.0)))["annotations"]
    assert exports.COCO_DEFAULT_MIN_CONFIDENCE == 0.01
    assert len(everything) - len(default) == 1
    assert all(annotation["score"] >= 0.01 for annotation in default)
