import numpy as np

from ml.constants import CLASS_NAMES, NEGATIVE_CLASS
from ml.synth.classes import (
    CLASS_FREQUENCIES,
    MICROTUBULES_CLASS,
    MITOTIC_SPINDLE_CLASS,
    NUCLEAR_CLASSES,
    assign_classes,
    can_show,
    sample_image_labels,
)
from tests.ml.synth.support import centred_cell, field


def test_image_labels_are_the_classes_its_cells_show():
    result = field(7, image_labels=(0, 16))
    assert result.image_labels == (0, 16)
    shown = {label for classes in result.cell_classes for label in classes}
    assert shown <= {0, 16, NEGATIVE_CLASS}
    assert {0, 16} <= shown


def test_negative_field_has_only_negative_cells():
    result = field(8, image_labels=(NEGATIVE_CLASS,))
    assert set(result.cell_classes) == {(NEGATIVE_CLASS,)}


def test_spindle_field_marks_only_some_cells_with_the_spindle():
    result = field(9, image_labels=(11,))
    assert set(result.cell_classes) == {(11,), (NEGATIVE_CLASS,)}
    assert sum(classes == (11,) for classes in result.cell_classes) < result.cell_count


def test_class_frequencies_are_keyed_by_every_class_name():
    assert list(CLASS_FREQUENCIES) == list(CLASS_NAMES)
    assert all(frequency > 0 for frequency in CLASS_FREQUENCIES.values())


def test_sample_image_labels_gives_negative_alone_or_one_to_three_other_classes():
    rng = np.random.default_rng(0)
    samples = [sample_image_labels(rng) for _ in range(2000)]
    for labels in samples:
        assert labels == (NEGATIVE_CLASS,) or (
            1 <= len(labels) <= 3 and labels == tuple(sorted(set(labels))) and NEGATIVE_CLASS not in labels
        )
    assert {label for labels in samples for label in labels} == set(range(len(CLASS_NAMES)))
    counts = np.bincount([label for labels in samples for label in labels], minlength=len(CLASS_NAMES))
    assert counts.argmax() == CLASS_NAMES.index("Nucleoplasm")


def test_dividing_cells_show_the_spindle_but_no_nuclear_class_or_microtubules():
    interphase, dividing = centred_cell(), centred_cell(mitotic=True)
    assert can_show(dividing, MITOTIC_SPINDLE_CLASS) and not can_show(interphase, MITOTIC_SPINDLE_CLASS)
    for label in (*NUCLEAR_CLASSES, MICROTUBULES_CLASS):
        assert can_show(interphase, label) and not can_show(dividing, label)
    assert can_show(dividing, CLASS_NAMES.index("Cytosol"))
    assert frozenset(range(6)) == NUCLEAR_CLASSES


def test_assign_classes_shows_every_label_in_some_cell_and_gives_silent_cells_negative():
    cells = [centred_cell()] * 30 + [centred_cell(mitotic=True)]
    for seed in range(10):
        classes = assign_classes(np.random.default_rng(seed), cells, (0, 7, MITOTIC_SPINDLE_CLASS))
        assert len(classes) == len(cells)
        assert {label for c in classes for label in c} >= {0, 7, MITOTIC_SPINDLE_CLASS}
        assert classes[-1] == (MITOTIC_SPINDLE_CLASS,) or classes[-1] == (7, MITOTIC_SPINDLE_CLASS)
        assert all(c == tuple(sorted(c)) and (c == (NEGATIVE_CLASS,) or NEGATIVE_CLASS not in c) for c in classes)


def test_assign_classes_leaves_cells_negative_when_none_can_show_the_label():
    cells = [centred_cell()] * 3
    classes = assign_classes(np.random.default_rng(0), cells, (MITOTIC_SPINDLE_CLASS,))
    assert classes == [(NEGATIVE_CLASS,)] * 3
