"""The `ml` commands read OME-TIFF files as one field each, with channels mapped by name or `--channel-map`."""

import csv

import numpy as np
import pytest
import tifffile

from ml.cli import main
from ml.cli import options as cli_options
from ml.cli.options import OME_FIELD, find_input_fields, parse_channel_map, read_input_fields
from ml.io import InputError, read_labels_png
from tests.ml.segmentation.support import ThresholdSegmenter
from tests.ml.support import draw_field, write_field_pngs


@pytest.fixture(autouse=True)
def threshold_segmenter(monkeypatch):
    monkeypatch.setattr(cli_options, "Segmenter", ThresholdSegmenter)


def _write_ome(path, names, planes):
    tifffile.imwrite(path, np.stack(planes), ome=True, metadata={"axes": "CYX", "Channel": {"Name": names}})


def _planes(field):
    return [np.round(channel * 65535).astype(np.uint16) for channel in (field.blue, field.green, field.red)]


def test_ome_tiff_files_are_fields_beside_kaggle_layout_ones(tmp_path):
    drawn = draw_field()
    write_field_pngs(tmp_path, "a-png", drawn.field)
    _write_ome(tmp_path / "b-ome.ome.tif", ["DAPI", "GFP", "Tubulin"], _planes(drawn.field))
    _write_ome(tmp_path / "c-ome.OME.TIFF", ["DAPI", "GFP", "Tubulin"], _planes(drawn.field))
    fields = find_input_fields(tmp_path)
    assert list(fields) == ["a-png", "b-ome", "c-ome"]
    assert fields["b-ome"] == {OME_FIELD: tmp_path / "b-ome.ome.tif"}
    read = dict(read_input_fields(fields, description="Reading"))
    assert read["b-ome"].channels_present == ("red", "green", "blue")  # Tubulin is red, by its name
    assert np.array_equal(read["b-ome"].green, np.round(drawn.field.green * 65535).astype(np.float32) / 65535)
    assert read["b-ome"].bit_depth == 16


def test_a_field_both_ome_and_channel_files_is_refused(tmp_path):
    drawn = draw_field()
    write_field_pngs(tmp_path, "same", drawn.field)
    _write_ome(tmp_path / "same.ome.tif", ["DAPI", "GFP", "Tubulin"], _planes(drawn.field))
    with pytest.raises(InputError, match="both the OME-TIFF same.ome.tif and channel files"):
        find_input_fields(tmp_path)


def test_channel_map_parses_and_refuses_bad_items():
    assert parse_channel_map("red=Tubulin, green=GFP,blue=ch 0") == {"Tubulin": "red", "GFP": "green", "ch 0": "blue"}
    assert parse_channel_map("") == {}
    with pytest.raises(InputError, match="is not channel=name"):
        parse_channel_map("purple=GFP")
    with pytest.raises(InputError, match="is not channel=name"):
        parse_channel_map("green")
    with pytest.raises(InputError, match="names the green channel twice"):
        parse_channel_map("green=GFP,green=Alexa")


def test_segment_and_measure_read_ome_tiff_with_a_channel_map(tmp_path):
    drawn = draw_field()
    images = tmp_path / "images"
    images.mkdir()
    _write_ome(images / "field.ome.tif", ["ch0", "ch1", "ch2"], _planes(drawn.field))
    labels = tmp_path / "labels"
    arguments = ["--images", str(images), "--device", "cpu"]
    # Names that say nothing: without a mapping the command says what to do.
    assert main(["segment", *arguments, "--out", str(labels)]) == 1
    mapping = ["--channel-map", "blue=ch0,green=ch1,red=ch2"]
    assert main(["segment", *arguments, "--out", str(labels), *mapping]) == 0
    assert set(np.unique(read_labels_png(labels / "field_cells.png"))) == {0, 1, 2, 3}
    out = tmp_path / "features.csv"
    assert main(["measure", *arguments, "--out", str(out), "--no-texture", *mapping]) == 0
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["ID"] for row in rows] == ["field"] * 3
    assert all(row["red_mean"] and not row["yellow_mean"] for row in rows)  # red given, yellow absent
    assert main(["measure", *arguments, "--out", str(out), "--channel-map", "green=ch1,green=ch2"]) == 2
