"""Fixtures of the command tests: a Kaggle-layout folder of drawn fields."""

import pytest

from tests.ml.support import draw_field, write_field_pngs


@pytest.fixture
def images_dir(tmp_path):
    """Two fields in Kaggle layout: "a-cells" with three cells, "b-empty" with none."""
    directory = tmp_path / "images"
    directory.mkdir()
    write_field_pngs(directory, "a-cells", draw_field().field)
    write_field_pngs(directory, "b-empty", draw_field(centres=()).field)
    return directory
