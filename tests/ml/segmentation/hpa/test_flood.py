import numpy as np
import pytest

from ml.segmentation.hpa import flood
from ml.segmentation.hpa.postprocess import label_cell, label_nuclei
from tests.ml.segmentation.support import grid_predictions, random_watershed_inputs


def test_the_compiled_flooding_loop_is_built():
    assert flood.compiled_library() is not None, "ml/segmentation/hpa/_flood.so is missing: run `make venv`"


@pytest.mark.parametrize("watershed_line", [False, True])
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_compiled_flooding_loop_visits_pixels_in_scikit_images_order(seed, flat, watershed_line, monkeypatch):
    """Bit-identical labels from `_flood.c` and scikit-image's own loop, seeded by every marker
    or only some (as `watershed_from_fronts` does), over plateaus and flat masks."""
    landscape, markers, mask = random_watershed_inputs(seed)
    heights = None if flat else flood.padded(landscape)
    padded_mask, labels = flood.padded_mask_and_markers(mask, markers)
    seeds = np.flatnonzero(labels)[:: 1 + seed % 3]
    runs = []
    for library in (flood.compiled_library(), None):
        assert library is not None or runs, "ml/segmentation/hpa/_flood.so is missing: run `make venv`"
        monkeypatch.setattr(flood, "compiled_library", lambda library=library: library)
        run_labels, run_mask = labels.copy(), padded_mask.copy()
        flood.flood_padded(heights, run_labels, run_mask, watershed_line=watershed_line, seeds=seeds)
        runs.append((run_labels, run_mask))
    (compiled, compiled_mask), (reference, reference_mask) = runs
    assert np.count_nonzero(compiled) > np.count_nonzero(labels)
    assert np.array_equal(compiled, reference)
    assert np.array_equal(compiled_mask, reference_mask)


def test_postprocessing_without_the_compiled_loop_gives_the_same_labels(monkeypatch):
    nuclei_pred, cell_pred = grid_predictions(cells_per_side=4, cell_px=22)
    compiled = label_nuclei(nuclei_pred), *label_cell(nuclei_pred, cell_pred)
    monkeypatch.setattr(flood, "compiled_library", lambda: None)
    for labels, expected in zip(
        (label_nuclei(nuclei_pred), *label_cell(nuclei_pred, cell_pred)), compiled, strict=True
    ):
        assert np.array_equal(labels, expected)
