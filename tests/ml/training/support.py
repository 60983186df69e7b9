"""Helpers of the training tests."""

import numpy as np

from ml.training.data import CellTable, multi_hot


def table_of(field_labels: list[tuple[int, ...]], cells_per_field: list[int]) -> CellTable:
    field_index = np.repeat(np.arange(len(field_labels)), cells_per_field)
    return CellTable(
        image_ids=tuple(f"f{i}" for i in range(len(field_labels))),
        image_labels=np.stack([multi_hot(labels) for labels in field_labels]),
        crops=np.zeros((len(field_index), 4, 8, 8), dtype=np.uint8),
        field_index=field_index,
        cell_ids=np.arange(1, len(field_index) + 1),
    )
