"""Teaching the model, measured through the API only (`python -m bench.curation`): on the ER
bleed-through domain (green' = green + 3 * yellow, v2 generator style, 1024 px), a user annotates at
most 200 cells of 12 training fields, trains a model from them and runs 8 held-out fields with it.

Measured on two CPU cores: shipped 0.7226, from 200 annotated cells 0.8246 (+0.102), weak from 20
labelled fields 0.7935 (+0.071); under `make test-slow` the annotated cells gave 0.7994 (+0.077), since
training on several threads does not repeat to the bit. The product's aim (a start
below 0.7 and a rise of 0.15) is not reached yet; this test holds the rise it reaches. Minutes on
two CPU cores, so behind `slow`."""

import pytest

from bench import curation as bench

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_annotating_200_cells_and_training_raises_the_held_out_map_on_a_shifted_domain():
    result = bench.run(
        heldout=8, train_fields=12, max_cells=200, weak_fields=20, epochs=50, weak_epochs=6, seed=7301, size_px=1024
    )
    print({key: value for key, value in result.items() if key != "per_class_ap"})
    assert result["annotated_cells"] <= 200
    assert result["start_map"] < 0.75
    assert result["cells_map"] - result["start_map"] >= 0.05, result
    assert result["weak_map"] - result["start_map"] >= 0.05, result
