from cells.forms import CropsExportForm


def test_crops_form_defaults_to_png_and_reads_a_list_of_cells():
    form = CropsExportForm({"cells": "3,7,12", "class_index": "4", "min_confidence": "0.5"})
    assert form.is_valid(), form.errors
    assert (form.cleaned_data["image_format"], form.cleaned_data["cells"]) == ("png", [3, 7, 12])
    assert (form.cleaned_data["class_index"], form.cleaned_data["min_confidence"], form.cleaned_data["field"]) == (
        4,
        0.5,
        None,
    )


def test_crops_form_refuses_another_format_and_a_malformed_cell_list():
    form = CropsExportForm({"image_format": "jpeg", "cells": "3;7"})
    assert not form.is_valid()
    assert form.errors["cells"] == ["List the cells as numbers separated by commas, such as 3,7,12."]
    assert "image_format" in form.errors
