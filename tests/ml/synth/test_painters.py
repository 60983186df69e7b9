import itertools

import numpy as np
import pytest

from ml.constants import CHANNELS, CLASS_NAMES, NEGATIVE_CLASS
from ml.synth.classes import can_show
from ml.synth.painters import PAINTERS, paint_green
from tests.ml.synth.support import centred_cell, field, painted_cell

SPINDLE = "Mitotic spindle"

NUCLEAR_NAMES = ("Nucleoplasm", "Nucleoli", "Nucleoli fibrillar center", "Nuclear speckles", "Nuclear bodies")
CYTOPLASMIC_NAMES = tuple(name for name in PAINTERS if name not in NUCLEAR_NAMES + ("Nuclear membrane", SPINDLE))
# Pairs of classes one cell can show: only a dividing cell has a spindle, and it shows no nuclear class.
PAIRS_SHOWN_TOGETHER = [pair for pair in itertools.combinations(PAINTERS, 2) if SPINDLE not in pair] + [
    (SPINDLE, name)
    for name in PAINTERS
    if name != SPINDLE and can_show(centred_cell(mitotic=True), CLASS_NAMES.index(name))
]


@pytest.fixture(scope="module")
def interphase_cell():
    return painted_cell()


@pytest.fixture(scope="module")
def dividing_cell():
    return painted_cell(mitotic=True)


def paint(name, painted, seed=1) -> np.ndarray:
    pattern = PAINTERS[name](np.random.default_rng(seed), painted.maps, painted.references.structures)
    return np.broadcast_to(pattern, painted.maps.shape).astype(np.float64)


def test_painters_are_keyed_by_the_name_of_every_class_but_negative():
    assert list(PAINTERS) == [name for name in CLASS_NAMES if name != CLASS_NAMES[NEGATIVE_CLASS]]


@pytest.mark.parametrize("name", [name for name in PAINTERS if name != SPINDLE])
def test_each_painter_draws_a_pattern_with_a_peak_of_about_one(name, interphase_cell):
    pattern = paint(name, interphase_cell)
    maps = interphase_cell.maps
    assert 0.5 <= pattern[maps.mask].max() <= 2.5
    assert pattern.min() >= 0.0


@pytest.mark.parametrize(("first", "second"), PAIRS_SHOWN_TOGETHER)
def test_each_painter_draws_a_pattern_unlike_every_other(first, second, interphase_cell, dividing_cell):
    painted = dividing_cell if SPINDLE in (first, second) else interphase_cell
    mask = painted.maps.mask
    assert np.corrcoef(paint(first, painted)[mask], paint(second, painted)[mask])[0, 1] < 0.85


@pytest.mark.parametrize("name", NUCLEAR_NAMES)
def test_nuclear_painters_paint_inside_the_nucleus(name, interphase_cell):
    maps = interphase_cell.maps
    pattern = paint(name, interphase_cell)
    assert pattern[maps.nucleus].sum() > 0.95 * pattern[maps.mask].sum()


@pytest.mark.parametrize("name", CYTOPLASMIC_NAMES)
def test_cytoplasmic_painters_paint_mostly_outside_the_nucleus(name, interphase_cell):
    maps = interphase_cell.maps
    pattern = paint(name, interphase_cell)
    assert pattern[maps.cytoplasm].sum() > 0.7 * pattern[maps.mask].sum()


def test_nuclear_membrane_is_a_rim_along_the_nucleus_outline(interphase_cell):
    maps = interphase_cell.maps
    pattern = paint("Nuclear membrane", interphase_cell)
    rim = maps.mask & (np.abs(maps.nucleus_distance) < 2.0)
    assert pattern[rim].mean() > 5 * pattern[maps.mask & ~rim].mean()


def test_plasma_membrane_is_a_line_along_the_cell_border(interphase_cell):
    maps = interphase_cell.maps
    pattern = paint("Plasma membrane", interphase_cell)
    border = maps.mask & (maps.edge_distance < 4.0)
    assert pattern[border].mean() > 5 * pattern[maps.mask & ~border].mean()


def test_mitotic_spindle_is_painted_only_in_dividing_cells(interphase_cell, dividing_cell):
    assert not paint(SPINDLE, interphase_cell).any()
    spindle = paint(SPINDLE, dividing_cell)
    np.testing.assert_array_equal(spindle, dividing_cell.references.structures.spindle)
    assert spindle.max() > 0.5


def test_green_copies_the_structures_the_reference_channels_show(interphase_cell):
    structures = interphase_cell.references.structures
    maps = interphase_cell.maps
    np.testing.assert_array_equal(
        paint("Microtubules", interphase_cell), (0.2 + structures.microtubules) * maps.edge_dimming
    )
    np.testing.assert_array_equal(paint("Endoplasmic reticulum", interphase_cell), structures.er * maps.edge_dimming)
    np.testing.assert_array_equal(paint("Nucleoli", interphase_cell), np.minimum(structures.nucleoli_map, 1.0))


def test_paint_green_of_a_negative_cell_is_faint_autofluorescence(interphase_cell):
    maps, references = interphase_cell.maps, interphase_cell.references
    negative = paint_green(np.random.default_rng(2), (NEGATIVE_CLASS,), maps, references.structures, green_gain=1.0)
    cytosol = paint_green(
        np.random.default_rng(2), (CLASS_NAMES.index("Cytosol"),), maps, references.structures, green_gain=1.0
    )
    assert 0.0 < negative[maps.mask].max() < 0.1
    assert cytosol[maps.cytoplasm].mean() > 5 * negative[maps.cytoplasm].mean()


def test_green_follows_each_cells_classes():
    nucleoplasm = field(10, image_labels=(0,))
    green = nucleoplasm.image[CHANNELS.index("green")]
    showing = [i + 1 for i, c in enumerate(nucleoplasm.cell_classes) if c == (0,)]
    silent = [i + 1 for i, c in enumerate(nucleoplasm.cell_classes) if c == (NEGATIVE_CLASS,)]
    assert showing and silent
    nuclei = nucleoplasm.nuclei_labels
    assert green[np.isin(nuclei, showing)].mean() > 3 * green[np.isin(nuclei, silent)].mean()
