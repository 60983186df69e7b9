import numpy as np

from ml.synth import REFERENCE_SIZE_PX
from ml.synth.drawing import Textures
from ml.synth.layout import edge_distance, rasterise
from ml.synth.references import cell_maps
from tests.ml.synth.support import centred_cell, painted_cell


def test_cell_maps_cut_the_cells_box_with_its_nucleus_inside():
    _cell, maps, _references = painted_cell()
    assert maps.mask.shape == maps.nucleus.shape == maps.grain.shape == maps.shape
    assert maps.nucleus.any() and not (maps.nucleus & ~maps.mask).any()
    np.testing.assert_array_equal(maps.cytoplasm, maps.mask & ~maps.nucleus)
    assert (maps.nucleus_distance[maps.nucleus] < 0).all()
    assert maps.ys.shape == (maps.shape[0], 1) and maps.xs.shape == (1, maps.shape[1])
    assert maps.ys[0, 0] == 0 and maps.xs[0, 0] == 0
    row, col = (round(v) for v in maps.nucleus_centre)
    assert maps.nucleus[row, col]


def test_cell_maps_are_none_for_a_cell_without_pixels():
    size_px = 512
    scale = size_px / REFERENCE_SIZE_PX
    cell = centred_cell(size_px=size_px)
    cell_labels, _nuclei_labels, _kept = rasterise([cell], size_px, scale)
    textures = Textures(np.random.default_rng(0), size_px, scale)
    distance = edge_distance(cell_labels)
    maps = cell_maps(cell, 2, cell_labels=cell_labels, edge_distance=distance, textures=textures, scale=scale)
    assert maps is None


def test_blue_is_the_nucleus_with_darker_nucleoli():
    _cell, maps, references = painted_cell()
    blue, structures = references.blue, references.structures
    assert blue[maps.nucleus].mean() > 5 * blue[maps.cytoplasm].mean()
    assert 2 <= len(structures.nucleoli) <= 4
    nucleoli = maps.nucleus & (np.broadcast_to(structures.nucleoli_map, maps.shape) > 0.8)
    assert nucleoli.any()
    assert blue[nucleoli].mean() < blue[maps.nucleus & ~nucleoli].mean()


def test_red_and_yellow_dim_along_cell_borders():
    _cell, maps, references = painted_cell()
    border = maps.cytoplasm & (maps.edge_distance < 2.0)
    inside = maps.cytoplasm & (maps.edge_distance > 15.0)
    for plane in (references.red, references.yellow):
        assert plane[border].mean() < 0.7 * plane[inside].mean()


def test_yellow_outlines_the_nuclear_envelope():
    _cell, maps, references = painted_cell()
    envelope = maps.mask & (np.abs(maps.nucleus_distance) < 1.5)
    assert (
        references.yellow[envelope].mean() > 1.5 * references.yellow[maps.nucleus & (maps.nucleus_distance < -5)].mean()
    )


def test_a_dividing_cell_has_a_spindle_for_microtubules_and_no_nucleoli():
    _cell, maps, references = painted_cell(mitotic=True)
    structures = references.structures
    assert structures.spindle is not None and structures.spindle.max() > 0.5
    assert structures.microtubules is structures.spindle
    assert len(structures.nucleoli) == 0 and structures.nucleoli_map == 0.0


def test_an_interphase_cell_has_microtubules_radiating_from_the_centrosome():
    _cell, maps, references = painted_cell()
    structures = references.structures
    assert structures.spindle is None
    ys, xs = np.indices(maps.shape)
    distance = np.hypot(ys - structures.centrosome[0], xs - structures.centrosome[1])
    fibres = structures.microtubules
    assert fibres[maps.mask & (distance < 10)].mean() > 2 * fibres[maps.mask & (distance > 30)].mean()
