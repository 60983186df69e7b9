import numpy as np
import pytest

from bench.measure import qc_precision_recall
from ml.measure import CellMeasurements, measurement_names
from ml.qc import QC_FLAGS, QcThresholds, qc_flags

NAMES = measurement_names(texture=False)


def _measurements(rows: list[dict]) -> CellMeasurements:
    """Cells with healthy defaults, each changed where `rows` says."""
    healthy = {
        "area_px": 1000.0,
        "solidity": 0.95,
        "hole_area_px": 0.0,
        "cell_pieces": 1.0,
        "nucleus_pieces": 1.0,
        "nucleus_area_px": 200.0,
        "nucleus_outside_fraction": 0.0,
        "border_px": 0.0,
        "focus": 1.0,
    }
    values = np.full((len(rows), len(NAMES)), np.nan)
    for index, row in enumerate(rows):
        for name, value in {**healthy, **row}.items():
            values[index, NAMES.index(name)] = value
    return CellMeasurements(cell_ids=np.arange(1, len(rows) + 1), names=NAMES, values=values)


def test_each_flag_follows_its_rule():
    cells = [
        {},
        {},
        {"focus": 0.1},
        {"border_px": 3},
        {"nucleus_pieces": 2},
        {"area_px": 3500.0},
        {"solidity": 0.7},
        {"hole_area_px": 20.0},
        {"nucleus_outside_fraction": 0.3},
        {"nucleus_area_px": 0.0},
        {"cell_pieces": 2.0},
        {"area_px": 150.0},
    ]
    assert qc_flags(_measurements(cells)) == [
        (),
        (),
        ("out_of_focus",),
        ("cut_by_border",),
        ("merged",),
        ("merged",),
        ("failed_contour",),
        ("failed_contour",),
        ("failed_contour",),
        ("failed_contour",),
        ("failed_contour",),
        ("too_small",),
    ]


def test_a_merged_cell_is_not_also_flagged_for_its_concave_outline():
    cells = [{}, {}, {}, {"nucleus_pieces": 2, "solidity": 0.7}]
    assert qc_flags(_measurements(cells))[3] == ("merged",)


def test_thresholds_are_configurable_and_checked():
    cells = [{}, {}, {"solidity": 0.9}, {"area_px": 300.0}]
    assert qc_flags(_measurements(cells))[2:] == [(), ()]
    thresholds = QcThresholds.from_mapping({"min_solidity": "0.92", "min_area_ratio": "0.5"})
    assert thresholds.min_solidity == 0.92 and thresholds.min_area_ratio == 0.5
    assert qc_flags(_measurements(cells), thresholds)[2:] == [("failed_contour",), ("too_small",)]
    with pytest.raises(ValueError, match="Unknown quality-control threshold 'solidity'"):
        QcThresholds.from_mapping({"solidity": "0.9"})


def test_relative_tests_need_enough_cells_in_the_field():
    assert qc_flags(_measurements([{"focus": 0.01}, {"area_px": 10.0}])) == [(), ()]
    assert qc_flags(_measurements([])) == []


def test_flags_find_injected_defects_with_precision_and_recall_of_at_least_0_9():
    scores = qc_precision_recall(fields=1)
    assert set(scores) == set(QC_FLAGS)
    for flag, count in scores.items():
        assert count["tp"] + count["fn"] >= 3, flag  # every kind of defect was injected
        assert count["precision"] >= 0.9 and count["recall"] >= 0.9, (flag, count)


@pytest.mark.slow
def test_flags_find_injected_defects_on_twelve_fields():
    scores = qc_precision_recall(fields=12)
    for flag, count in scores.items():
        print(flag, count)
        assert count["precision"] >= 0.9 and count["recall"] >= 0.9, (flag, count)
