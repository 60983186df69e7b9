"""Measurements in the pipeline, images of any range and scale, OME-TIFF channel names."""

import dataclasses
import io

import numpy as np
import pytest
import tifffile

from ml.io import (
    InputError,
    map_ome_channels,
    normalise_range,
    nucleus_diameter_from,
    parse_channel_mapping,
    read_multichannel_tiff,
)
from ml.pipeline import MeasureOptions, analyse_field
from ml.qc import QcThresholds
from ml.segmentation import Segmenter
from tests.ml.support import FakeSegmenter, draw_field


def test_analyse_field_measures_and_flags_every_cell_when_asked(drawn_field):
    segmenter = FakeSegmenter(drawn_field.nuclei_labels, drawn_field.cell_labels)
    result = analyse_field(
        drawn_field.field,
        segmenter=segmenter,
        predictor=None,
        measure=MeasureOptions(texture=False, qc=QcThresholds(min_area_px=6400)),
    )
    assert "measurements" in result.timings_s
    areas = [cell.measurements["area_px"] for cell in result.cells]
    assert areas == [cell.area_px for cell in result.cells]
    assert "lbp_000" not in result.cells[0].measurements
    # The disks are 6,361 px: under the absolute limit given.
    assert [cell.qc_flags for cell in result.cells] == [("too_small",)] * 3
    plain = analyse_field(drawn_field.field, segmenter=segmenter, predictor=None)
    assert all(cell.measurements is None and cell.qc_flags == () for cell in plain.cells)


def test_a_dim_channel_is_stretched_over_its_own_range_and_a_bright_one_is_left_alone():
    drawn = draw_field()
    dim = dataclasses.replace(drawn.field, blue=drawn.field.blue * (235 / 65535 / 0.8), bit_depth=16)
    normalised = normalise_range(dim)
    assert normalised.green is dim.green  # bright channels are not touched at all
    assert normalised.blue.max() == pytest.approx(1.0) and normalised.blue.min() == 0.0
    assert normalise_range(drawn.field) is drawn.field


def test_a_16_bit_field_with_values_under_256_segments_like_the_bright_one():
    drawn = draw_field()
    bright = Segmenter("classical")(drawn.field)
    planes = {name: np.round(getattr(drawn.field, name) / 0.8 * 235) / 65535 for name in ("green", "blue")}
    dim = dataclasses.replace(
        drawn.field, red=None, yellow=None, bit_depth=16, **{k: v.astype(np.float32) for k, v in planes.items()}
    )
    segmented = Segmenter("classical")(dim)
    assert int(segmented.nuclei_labels.max()) == 3
    np.testing.assert_array_equal(segmented.nuclei_labels, bright.nuclei_labels)


def test_a_given_nucleus_diameter_sets_the_working_scale():
    from ml.segmentation.classical import ClassicalBackend

    backend = ClassicalBackend()
    field = draw_field(size_px=256).field
    assert backend._factor(field) == 1
    assert backend._factor(dataclasses.replace(field, nucleus_diameter_px=100.0)) == 4
    assert nucleus_diameter_from(pixel_size_um=0.5) == 20.0
    assert nucleus_diameter_from(pixel_size_um=0.5, nucleus_diameter_px=12) == 12.0
    assert nucleus_diameter_from() is None
    with pytest.raises(InputError, match="pixel size must be a positive number"):
        nucleus_diameter_from(pixel_size_um=0)


def _ome(names, planes) -> io.BytesIO:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, planes, ome=True, metadata={"axes": "CYX", "Channel": {"Name": names}})
    buffer.seek(0)
    return buffer


def test_ome_tiff_channels_map_by_their_names_or_a_mapping():
    planes = (np.arange(3 * 32 * 40).reshape(3, 32, 40) % 4000).astype(np.uint16)
    field = read_multichannel_tiff(_ome(["Hoechst 33342", "GFP", "Calreticulin"], planes))
    assert field.channels_present == ("green", "blue", "yellow") and field.bit_depth == 16
    np.testing.assert_array_equal(field.blue, planes[0] / np.float32(65535))
    np.testing.assert_array_equal(field.yellow, planes[2] / np.float32(65535))
    mapped = read_multichannel_tiff(
        _ome(["ch0", "ch1", "ch2"], planes), channel_mapping={"CH1": "blue", "ch2": "green"}
    )
    assert mapped.channels_present == ("green", "blue")
    np.testing.assert_array_equal(mapped.green, planes[2] / np.float32(65535))


def test_ome_names_that_cannot_be_mapped_are_refused_with_a_sentence():
    with pytest.raises(InputError, match="'ch0' is not recognised"):
        map_ome_channels(["ch0", "DAPI"])
    with pytest.raises(InputError, match="No OME channel maps to green"):
        map_ome_channels(["DAPI", "Tubulin"])
    with pytest.raises(InputError, match="map to blue"):
        map_ome_channels(["DAPI", "Hoechst", "GFP"])
    assert parse_channel_mapping('{"DAPI": "Blue"}') == {"DAPI": "blue"}
    with pytest.raises(InputError, match="one of red, green, blue, yellow"):
        parse_channel_mapping('{"DAPI": "cyan"}')
    with pytest.raises(InputError, match="must be a JSON object"):
        parse_channel_mapping("[1, 2]")
