"""The v2 style of synthetic fields: truth as v1 gives it, realistic layout, staining and optics, and
each class's pattern where and how HPA images show it."""

import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from ml.constants import CHANNELS, CLASS_NAMES, NEGATIVE_CLASS
from ml.synth import REFERENCE_SIZE_PX, field_id, synthesize_field, write_dataset
from ml.synth.layout import edge_distance
from ml.synth.v2 import synthesize_field_v2
from ml.synth.v2.layout import Cell, rasterise
from ml.synth.v2.painters import PAINTERS, paint_green
from ml.synth.v2.references import Textures, cell_maps, paint_references

SIZE_PX = 512
CELL_FIELD_PX = 1024
SPINDLE = CLASS_NAMES.index("Mitotic spindle")


def v2_field(seed: int, size_px: int = SIZE_PX, **kwargs):
    return synthesize_field_v2(np.random.default_rng(seed), size_px, **kwargs)


@pytest.fixture(scope="module")
def fields():
    return [v2_field(seed) for seed in range(6)]


def hand_cell(*, mitotic: bool = False) -> Cell:
    scale = CELL_FIELD_PX / REFERENCE_SIZE_PX
    centre = (CELL_FIELD_PX / 2, CELL_FIELD_PX / 2)
    return Cell(
        nucleus_centre=centre,
        nucleus_axes=(90 * scale, 25 * scale) if mitotic else (110 * scale, 90 * scale),
        nucleus_angle=0.3,
        nucleus_harmonics=np.zeros((4, 2)),
        cell_centre=centre,
        cell_axes=(150 * scale, 140 * scale) if mitotic else (340 * scale, 220 * scale),
        cell_angle=0.3,
        cell_harmonics=np.zeros((6, 2)),
        mitotic=mitotic,
        ruffle=0.0,
    )


def painted(*, mitotic: bool = False, seed: int = 0):
    """A hand-made cell alone in its field: (cell, maps, references)."""
    rng = np.random.default_rng(seed)
    scale = CELL_FIELD_PX / REFERENCE_SIZE_PX
    cell = hand_cell(mitotic=mitotic)
    labels, _nuclei, kept = rasterise([cell], CELL_FIELD_PX, scale, np.zeros((CELL_FIELD_PX,) * 2, np.float32))
    assert kept == [0]
    (box,) = ndi.find_objects(labels)
    box = tuple(slice(max(0, s.start - 10), s.stop + 10) for s in box)
    maps = cell_maps(
        cell,
        1,
        box,
        cell_labels=labels,
        edge_distance=edge_distance(labels),
        textures=Textures(rng, CELL_FIELD_PX, scale),
        scale=scale,
    )
    return cell, maps, paint_references(rng, cell, maps)


@pytest.fixture(scope="module")
def interphase():
    return painted()


@pytest.fixture(scope="module")
def dividing():
    return painted(mitotic=True)


def pattern(name, cell, seed=3):
    _cell, maps, references = cell
    values = PAINTERS[name](np.random.default_rng(seed), maps, references.structures)
    return np.broadcast_to(values, maps.base.shape).astype(np.float64) * maps.base.mask


def test_a_v2_field_depends_only_on_its_seed_and_differs_from_v1():
    first, again = v2_field(4), v2_field(4)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.cell_labels, again.cell_labels)
    assert first.image.dtype == np.float32 and first.image.shape == (4, SIZE_PX, SIZE_PX)
    assert first.image.min() >= 0.0 and first.image.max() <= 1.0
    v1 = synthesize_field(np.random.default_rng(4), SIZE_PX)
    assert not np.array_equal(v1.image, first.image)


def test_v2_truth_has_v1_form_every_nucleus_inside_its_cell(fields):
    for field in fields:
        ids = np.unique(field.cell_labels[field.cell_labels > 0])
        np.testing.assert_array_equal(ids, np.arange(1, field.cell_count + 1))
        inside = field.nuclei_labels > 0
        np.testing.assert_array_equal(field.nuclei_labels[inside], field.cell_labels[inside])
        assert set(field.image_labels) <= {c for classes in field.cell_classes for c in classes}


def test_v2_fields_vary_in_density_and_their_cells_touch_and_vary_in_size(fields):
    counts = [field.cell_count for field in fields]
    assert max(counts) >= 1.5 * min(counts)
    touching, ratios = [], []
    for field in fields:
        labels = field.cell_labels
        border = (labels[:-1] != labels[1:]) & (labels[:-1] > 0) & (labels[1:] > 0)
        touching.append(len(np.unique(labels[:-1][border])) / field.cell_count)
        areas = np.bincount(labels.ravel())[1:]
        ratios.append(areas.max() / areas.min())
    assert max(touching) >= 0.5
    assert np.median(ratios) >= 2.0


def test_v2_reference_channels_are_not_saturated_and_the_background_is_not_flat(fields):
    for field in fields:
        for channel in ("red", "blue", "yellow"):
            plane = field.image[CHANNELS.index(channel)]
            assert (plane >= 1.0).mean() < 0.002
    small = [v2_field(seed, 256) for seed in range(12)]
    backgrounds = [field.image[CHANNELS.index("yellow")][field.cell_labels == 0] for field in small]
    assert any(bg.std() > 0.002 for bg in backgrounds if bg.size)  # camera noise
    medians = [np.median(bg) for bg in backgrounds if bg.size]
    assert max(medians) > 0.003 and min(medians) < 0.001  # some fields keep a camera offset, some had it subtracted


def test_v2_fields_span_dim_and_bright_staining():
    means = []
    for seed in range(8):
        field = v2_field(seed, 384, image_labels=(CLASS_NAMES.index("Cytosol"),))
        cells = field.cell_labels > 0
        means.append(field.image[CHANNELS.index("green")][cells].mean())
    assert max(means) >= 2.5 * min(means)


def test_v2_spindle_fields_have_dividing_cells_and_only_they_show_the_spindle():
    field = v2_field(2, image_labels=(SPINDLE,))
    showing = [i for i, classes in enumerate(field.cell_classes) if SPINDLE in classes]
    assert showing
    assert field.image_labels == (SPINDLE,)


def test_write_dataset_v2_writes_the_v2_fields_and_v1_stays_the_default(tmp_path):
    write_dataset(tmp_path / "v2", n_images=1, seed=6, size_px=256, bit_depth=8, style="v2")
    write_dataset(tmp_path / "v1", n_images=1, seed=6, size_px=256, bit_depth=8)
    v2 = synthesize_field_v2(np.random.default_rng([6, 0]), 256)
    v1 = synthesize_field(np.random.default_rng([6, 0]), 256)
    for channel, plane_v2, plane_v1 in zip(CHANNELS, v2.image, v1.image, strict=True):
        name = f"{field_id(6, 0)}_{channel}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "v2" / name)), np.round(plane_v2 * 255))
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "v1" / name)), np.round(plane_v1 * 255))


def test_write_dataset_refuses_an_unknown_style(tmp_path):
    with pytest.raises(ValueError, match="style='v3' is not supported; use one of v1, v2."):
        write_dataset(tmp_path, n_images=1, seed=0, size_px=256, bit_depth=8, style="v3")


def test_painters_are_keyed_by_every_class_but_negative():
    assert list(PAINTERS) == [name for name in CLASS_NAMES if name != CLASS_NAMES[NEGATIVE_CLASS]]


@pytest.mark.parametrize("name", [name for name in PAINTERS if CLASS_NAMES.index(name) != SPINDLE])
def test_each_v2_painter_peaks_near_one(name, interphase):
    values = pattern(name, interphase)
    assert 0.4 <= values.max() <= 2.5
    assert values.min() >= 0.0


def test_the_aggresome_is_one_bright_blob_beside_the_nucleus(interphase):
    _cell, maps, _refs = interphase
    values = pattern("Aggresome", interphase)
    bright = values > 0.5 * values.max()
    pieces, count = ndi.label(bright)
    assert count == 1
    assert bright.sum() < 0.08 * maps.base.mask.sum()
    distance = maps.base.nucleus_distance[bright]
    assert np.median(distance) < 0.6 * maps.base.nucleus_radius  # perinuclear


def test_vesicles_are_many_small_dots_over_the_cytoplasm(interphase):
    _cell, maps, _refs = interphase
    values = pattern("Vesicles and punctate cytosolic patterns", interphase)
    peaks = (values == ndi.maximum_filter(values, size=7)) & (values > 0.3 * values.max())
    assert peaks.sum() >= 40
    assert maps.base.cytoplasm[peaks].mean() > 0.95


def test_nucleoli_are_a_few_bright_spots_inside_the_nucleus(interphase):
    _cell, maps, refs = interphase
    values = pattern("Nucleoli", interphase)
    bright = values > 0.5 * values.max()
    _pieces, count = ndi.label(bright)
    assert 1 <= count <= 6
    assert maps.base.nucleus[bright].mean() > 0.95


def test_the_golgi_ribbon_lies_on_one_side_of_the_nucleus(interphase):
    _cell, maps, _refs = interphase
    values = pattern("Golgi apparatus", interphase)
    ys, xs = np.nonzero(values > 0.4 * values.max())
    angles = np.arctan2(ys - maps.base.nucleus_centre[0], xs - maps.base.nucleus_centre[1])
    resultant = math.hypot(np.cos(angles).mean(), np.sin(angles).mean())
    assert resultant > 0.5  # concentrated on one side; 0 would be all around
    assert np.median(maps.base.nucleus_distance[ys, xs]) < 0.5 * maps.base.nucleus_radius


def test_actin_brightens_towards_the_cell_border(interphase):
    _cell, maps, _refs = interphase
    values = pattern("Actin filaments", interphase)
    edge = maps.base.edge_distance
    near = maps.base.cytoplasm & (edge < 0.15 * maps.base.cell_radius)
    far = maps.base.cytoplasm & (edge > 0.4 * maps.base.cell_radius)
    cytosol = pattern("Cytosol", interphase)
    # Cytosol fades into the thin border; actin's fibres and cortex brighten towards it.
    assert values[near].mean() / values[far].mean() > 2.0 * cytosol[near].mean() / cytosol[far].mean()


def test_the_spindle_is_bipolar_in_a_dividing_cell_and_absent_elsewhere(interphase, dividing):
    assert pattern("Mitotic spindle", interphase).max() == 0.0
    cell, maps, _refs = dividing
    values = pattern("Mitotic spindle", dividing)
    axis = np.array([math.cos(cell.nucleus_angle), -math.sin(cell.nucleus_angle)])
    offsets = np.stack(np.nonzero(values > 0.5 * values.max()), axis=1) - np.array(maps.base.nucleus_centre)
    along = offsets @ axis
    assert (along > 0.2 * maps.base.cell_radius).any() and (along < -0.2 * maps.base.cell_radius).any()


def test_paint_green_of_a_negative_cell_is_dim_autofluorescence(interphase):
    _cell, maps, refs = interphase
    negative = paint_green(np.random.default_rng(0), (NEGATIVE_CLASS,), maps, refs.structures, green_gain=1.0)
    cytosol = paint_green(
        np.random.default_rng(0), (CLASS_NAMES.index("Cytosol"),), maps, refs.structures, green_gain=1.0
    )
    mask = maps.base.mask
    assert np.broadcast_to(negative, mask.shape)[mask].mean() < 0.2 * cytosol[mask].mean()


def test_microtubules_in_red_are_fine_filaments_not_a_flat_fill(interphase):
    _cell, maps, refs = interphase
    red = np.broadcast_to(refs.red, maps.base.shape)[maps.base.cytoplasm]
    assert np.percentile(red, 95) > 2.0 * np.percentile(red, 30)
