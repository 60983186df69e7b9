import numpy as np
import pytest

from ml.classifier.predictor import Predictor
from ml.crops import crop_cells
from ml.encoding import decode_rle
from ml.pipeline import analyse_field
from ml.segmentation import Segmentation
from tests.ml.support import FakeSegmenter, draw_field

TIMING_KEYS = {"segmentation", "encoding", "crops", "classification"}


def test_analyse_field_encodes_every_cell_and_its_nucleus(drawn_field):
    segmenter = FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels)
    result = analyse_field(drawn_field.field, segmenter=segmenter, predictor=None)
    assert (result.height, result.width) == (256, 256)
    assert [cell.cell_id for cell in result.cells] == [1, 2, 3]
    for cell in result.cells:
        cell_mask = drawn_field.cell_labels == cell.cell_id
        np.testing.assert_array_equal(decode_rle(cell.mask_rle), cell_mask)
        np.testing.assert_array_equal(decode_rle(cell.nucleus_rle), drawn_field.nuclei_labels == cell.cell_id)
        rows, cols = np.nonzero(cell_mask)
        assert cell.bbox == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        assert cell.area_px == cell_mask.sum()
    assert result.segmentation.backend == "fake"


def test_analyse_field_without_a_predictor_leaves_classification_out(drawn_field):
    segmenter = FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels)
    result = analyse_field(drawn_field.field, segmenter=segmenter, predictor=None)
    assert all(cell.probabilities is None for cell in result.cells)
    assert result.image_probabilities is None and result.model_name is None
    assert set(result.timings_s) == TIMING_KEYS
    assert result.timings_s["crops"] == 0.0 and result.timings_s["classification"] == 0.0


def test_analyse_field_classifies_each_cell_with_the_predictor(drawn_field, tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    segmenter = FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels)
    result = analyse_field(drawn_field.field, segmenter=segmenter, predictor=predictor)

    crops = crop_cells(drawn_field.field.stack(), drawn_field.cell_labels, size_px=predictor.input_size_px)
    predictions = predictor.predict_cells(crops)
    image, final = predictions.image_probabilities, predictions.final_probabilities
    assert result.model_name == "tiny-model"
    np.testing.assert_allclose(result.image_probabilities, image, rtol=0, atol=1e-7)
    for cell, expected in zip(result.cells, final, strict=True):
        assert len(cell.probabilities) == 19
        np.testing.assert_allclose(cell.probabilities, expected, rtol=0, atol=1e-7)
    assert set(result.timings_s) == TIMING_KEYS
    assert all(seconds >= 0 for seconds in result.timings_s.values())


def test_analyse_field_handles_a_field_without_cells(tiny_checkpoint):
    empty = draw_field(centres=())
    segmenter = FakeSegmenter(empty.nuclei_labels, empty.cell_labels)
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    result = analyse_field(empty.field, segmenter=segmenter, predictor=predictor)
    assert result.cells == ()
    assert result.image_probabilities == (0.0,) * 19
    assert result.model_name == "tiny-model"


def test_analyse_field_gives_a_cell_without_nucleus_an_empty_nucleus_mask(drawn_field):
    nuclei_labels = np.where(drawn_field.nuclei_labels == 2, 0, drawn_field.nuclei_labels).astype(np.uint16)
    segmenter = FakeSegmenter(nuclei_labels, drawn_field.cell_labels)
    result = analyse_field(drawn_field.field, segmenter=segmenter, predictor=None)
    assert not decode_rle(result.cells[1].nucleus_rle).any()


def test_analyse_field_reports_each_stage_then_completion(drawn_field, tiny_checkpoint):
    reports = []
    analyse_field(
        drawn_field.field,
        segmenter=FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels),
        predictor=Predictor.from_checkpoint(tiny_checkpoint, device="cpu"),
        progress=lambda stage, fraction: reports.append((stage, fraction)),
    )
    assert reports == [("segmenting", 0.0), ("encoding", 0.6), ("classifying", 0.7), ("classifying", 1.0)]


def test_analyse_field_without_a_predictor_completes_after_encoding(drawn_field):
    reports = []
    analyse_field(
        drawn_field.field,
        segmenter=FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels),
        predictor=None,
        progress=lambda stage, fraction: reports.append((stage, fraction)),
    )
    assert reports == [("segmenting", 0.0), ("encoding", 0.6), ("encoding", 1.0)]


def test_analyse_field_rejects_labels_of_another_shape(drawn_field):
    small = np.zeros((128, 128), dtype=np.uint16)
    message = r"^The fake segmentation returned labels of shape \(128, 128\) for a field of shape \(256, 256\)"
    with pytest.raises(ValueError, match=message):
        analyse_field(drawn_field.field, segmenter=FakeSegmenter(small, small), predictor=None)


def test_analyse_field_with_the_classical_segmenter(drawn_field):
    pytest.importorskip("ml.segmentation.classical", reason="classical backend not yet available")
    from ml.segmentation import Segmenter

    result = analyse_field(drawn_field.field, segmenter=Segmenter("classical"), predictor=None)
    segmentation = result.segmentation
    assert isinstance(segmentation, Segmentation)
    assert segmentation.cell_labels.shape == (256, 256) and segmentation.cell_labels.dtype == np.uint16
    assert len(result.cells) == segmentation.cell_count == 3
    for cell in result.cells:  # each found cell covers one drawn nucleus
        nucleus_ids = np.unique(drawn_field.nuclei_labels[decode_rle(cell.mask_rle)])
        assert len(nucleus_ids[nucleus_ids > 0]) == 1


def test_analyse_field_measures_in_a_thread_the_same_values_as_measure_cells(drawn_field, tiny_checkpoint):
    from ml.measure import measure_cells
    from ml.pipeline import MeasureOptions

    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    segmenter = FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels)
    result = analyse_field(drawn_field.field, segmenter=segmenter, predictor=predictor, measure=MeasureOptions())
    direct = measure_cells(drawn_field.field, drawn_field.cell_labels, drawn_field.nuclei_labels)
    assert [cell.measurements for cell in result.cells] == [direct.row_dict(row) for row in range(len(direct))]
    assert result.timings_s["measurements"] >= 0.0


def test_analyse_field_raises_the_measurement_threads_error(drawn_field, monkeypatch):
    import ml.pipeline
    from ml.pipeline import MeasureOptions

    def broken(*args, **kwargs):
        raise MemoryError("no room for the measurements")

    monkeypatch.setattr(ml.pipeline, "measure_cells", broken)
    segmenter = FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels)
    with pytest.raises(MemoryError, match="no room"):
        analyse_field(drawn_field.field, segmenter=segmenter, predictor=None, measure=MeasureOptions())


def test_analyse_field_makes_the_viewer_pictures_when_asked(drawn_field):
    from ml.viewer import viewer_images

    segmenter = FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels)
    assert analyse_field(drawn_field.field, segmenter=segmenter, predictor=None).viewer is None
    result = analyse_field(drawn_field.field, segmenter=segmenter, predictor=None, viewer=True)
    expected = viewer_images(drawn_field.field, result.segmentation)
    assert np.array_equal(result.viewer.composite, expected.composite)
    assert np.array_equal(result.viewer.cell_ids, expected.cell_ids)
    assert result.timings_s["viewer"] >= 0.0
    assert result.pictures.viewer_shape == expected.shape
    assert len(result.pictures.thumbnails) == len(result.cells)


def test_a_failed_analysis_leaves_no_picture_threads_behind(drawn_field):
    import threading

    def failing(field):
        raise MemoryError("no room")

    with pytest.raises(MemoryError, match="no room"):
        analyse_field(drawn_field.field, segmenter=failing, predictor=None, viewer=True)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("pictures")]


def test_the_classifier_runs_on_one_torch_thread_beside_the_measurements(drawn_field, tiny_checkpoint, monkeypatch):
    import torch

    from ml.pipeline import MeasureOptions

    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    seen = []
    predict = predictor.predict_cells

    def counting(crops):
        seen.append(torch.get_num_threads())
        return predict(crops)

    monkeypatch.setattr(predictor, "predict_cells", counting)
    segmenter = FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        analyse_field(drawn_field.field, segmenter=segmenter, predictor=predictor, measure=MeasureOptions())
        analyse_field(drawn_field.field, segmenter=segmenter, predictor=predictor, viewer=True)
        assert torch.get_num_threads() == 3  # given back afterwards
        analyse_field(drawn_field.field, segmenter=segmenter, predictor=predictor)  # nothing beside it
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 3]


def test_a_failed_classification_gives_torch_its_threads_back(drawn_field, tiny_checkpoint, monkeypatch):
    import torch

    from ml.pipeline import MeasureOptions

    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")

    def broken(crops):
        raise RuntimeError("out of memory in the classifier")

    monkeypatch.setattr(predictor, "predict_cells", broken)
    segmenter = FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            analyse_field(drawn_field.field, segmenter=segmenter, predictor=predictor, measure=MeasureOptions())
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
