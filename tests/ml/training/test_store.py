import numpy as np
import pytest
import torch

from ml.constants import NUM_CLASSES
from ml.crops import crop_cells
from ml.io import InputError
from ml.training.store import CellStore, StoreCellDataset
from tests.ml.support import draw_field


def test_add_field_stores_the_cells_crops_ids_and_labels(tmp_path):
    drawn = draw_field()
    store = CellStore.create(tmp_path / "store", size_px=32)
    assert store.add_field("f1", drawn.field, drawn.cell_labels, image_labels=(16, 0), segmentation="x") == 3
    stored = store.read_field("f1")
    expected = crop_cells(drawn.field.stack(), drawn.cell_labels, size_px=32)
    assert np.array_equal(stored.crops, np.round(expected.images * 255).astype(np.uint8))
    assert stored.cell_ids.tolist() == [1, 2, 3] and stored.image_labels == (0, 16)
    assert np.array_equal(stored.bboxes, expected.bboxes) and np.array_equal(stored.areas_px, expected.areas_px)
    assert np.isnan(stored.cell_targets).all()
    assert np.array_equal(store.read_cell_labels("f1"), drawn.cell_labels)
    assert store.read_field_attrs("f1")["segmentation"] == "x"


def test_cell_classes_are_kept_per_cell_and_give_the_field_labels_when_it_has_none(tmp_path):
    drawn = draw_field()
    store = CellStore.create(tmp_path / "store", size_px=32)
    store.add_field("f1", drawn.field.stack(), drawn.cell_labels, cell_classes={2: (5,), 3: (0, 18)})
    targets = store.cell_targets(["f1"])
    assert np.isnan(targets[0]).all()
    assert np.flatnonzero(targets[1]).tolist() == [5] and np.flatnonzero(targets[2]).tolist() == [0, 18]
    assert store.read_field("f1").image_labels == (0, 5, 18)
    assert store.read_field_attrs("f1")["cell_classes"] == 2


def test_add_field_refuses_classes_out_of_range_and_cells_without_pixels(tmp_path):
    drawn = draw_field()
    store = CellStore.create(tmp_path / "store", size_px=32)
    with pytest.raises(InputError, match=r"^Field f1: classes must lie in 0\.\.18, got \[19\]\.$"):
        store.add_field("f1", drawn.field, drawn.cell_labels, image_labels=(19,))
    with pytest.raises(InputError, match=r"^Field f1: cell 9 has classes but no pixels in the cell labels\.$"):
        store.add_field("f1", drawn.field, drawn.cell_labels, cell_classes={9: (1,)})
    assert store.field_ids() == []


def test_a_half_written_field_is_not_a_field_and_is_cleared(tmp_path):
    drawn = draw_field()
    store = CellStore.create(tmp_path / "store", size_px=32)
    store.add_field("done", drawn.field, drawn.cell_labels, image_labels=(1,))
    killed = tmp_path / "store" / ".partial" / "f2.0123"  # what a killed writer leaves
    (killed / "crops").mkdir(parents=True)
    assert store.field_ids() == ["done"] and not store.has_field("f2")
    store.remove_partial()
    assert not (tmp_path / "store" / ".partial").exists()


def test_index_follows_new_fields_and_empty_fields(tmp_path):
    drawn = draw_field()
    store = CellStore.create(tmp_path / "store", size_px=32)
    store.add_field("b", drawn.field, drawn.cell_labels, image_labels=(1,))
    assert store.index().cell_counts.tolist() == [3]
    store.add_field("a", drawn.field, np.zeros_like(drawn.cell_labels), image_labels=(2, 3))
    index = CellStore.open(tmp_path / "store").index()
    assert index.image_ids == ("a", "b") and index.cell_counts.tolist() == [0, 3]
    assert [np.flatnonzero(row).tolist() for row in index.image_labels] == [[2, 3], [1]]
    assert index.offsets.tolist() == [0, 0, 3] and index.cell_ids.tolist() == [1, 2, 3]


def test_an_existing_field_is_kept_unless_replaced(tmp_path):
    drawn = draw_field()
    store = CellStore.create(tmp_path / "store", size_px=32)
    store.add_field("f", drawn.field, drawn.cell_labels, image_labels=(1,))
    one_cell = (drawn.cell_labels == 1).astype(np.uint16)
    assert store.add_field("f", drawn.field, one_cell, image_labels=(2,)) == 3
    assert store.add_field("f", drawn.field, one_cell, image_labels=(2,), replace=True) == 1
    assert store.read_field("f").image_labels == (2,) and store.field_ids() == ["f"]


def test_create_refuses_another_crop_size_and_open_refuses_a_plain_folder(tmp_path):
    CellStore.create(tmp_path / "store", size_px=32)
    with pytest.raises(InputError, match="holds 32 px crops, not 64 px"):
        CellStore.create(tmp_path / "store", size_px=64)
    with pytest.raises(InputError, match=r"is not a cell store; make one with `python -m ml prepare"):
        CellStore.open(tmp_path)


def test_dataset_reads_the_chosen_cells_from_disk_with_their_targets(tmp_path):
    drawn = draw_field()
    store = CellStore.create(tmp_path / "store", size_px=32)
    store.add_field("a", drawn.field, drawn.cell_labels, image_labels=(1,))
    store.add_field("b", drawn.field, (drawn.cell_labels == 2).astype(np.uint16), image_labels=(2,))
    targets = np.arange(4 * NUM_CLASSES, dtype=np.float32).reshape(4, NUM_CLASSES)
    dataset = StoreCellDataset(store, ["a", "b"], np.array([3, 1]), targets, np.array([3, 0]))
    crop, target = dataset[0]
    assert len(dataset) == 2 and crop.dtype == torch.float32
    assert torch.equal(crop, torch.from_numpy(store.read_field("b").crops[0] / np.float32(255)))
    assert torch.equal(target, torch.from_numpy(targets[3]))
    assert torch.equal(dataset[1][0], torch.from_numpy(store.read_field("a").crops[0] / np.float32(255)))


def test_iter_crops_gives_every_cell_in_order_in_batches(tmp_path):
    drawn = draw_field()
    store = CellStore.create(tmp_path / "store", size_px=32)
    for name in ("a", "b", "c"):
        store.add_field(name, drawn.field, drawn.cell_labels, image_labels=(1,))
    batches = list(store.iter_crops(["c", "a"], batch_size=4))
    assert [len(b) for b in batches] == [4, 2]
    assert np.array_equal(np.concatenate(batches), np.concatenate([store.read_field(i).crops for i in ("c", "a")]))
