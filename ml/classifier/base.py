"""What every cell classifier the product runs gives and describes, whatever its format.

A classifier is an hpaweb checkpoint (`ml.classifier.predictor.Predictor`) or an imported
bioimage.io package; both satisfy `CellClassifierModel`, so the pipeline, the command line and
the web app treat them alike.
"""

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ml.crops import CellCrops

FORMATS: tuple[str, ...] = ("hpaweb", "bioimage.io", "hpaweb-classical")


@dataclass(frozen=True)
class ModelDescription:
    """Who a classifier is and how far to trust it; shown beside every prediction it makes."""

    name: str
    version: str
    format: str  # one of FORMATS
    architecture: str
    input_size_px: int
    class_names: tuple[str, ...]
    summary: str  # the one line of the model card that matters most to a user
    kind: str = "classifier"
    card: str = ""  # the model card, markdown
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    metrics: dict = field(default_factory=dict, compare=False)
    data: dict = field(default_factory=dict, compare=False)  # a description of the training data


@dataclass(frozen=True, eq=False)
class CellPredictions:
    """One field's predictions; row i of every per-cell array is crop i."""

    cell_probabilities: np.ndarray  # float32 (N, 19), each cell on its own
    image_probabilities: np.ndarray  # float32 (19,), pooled over the field's cells
    final_probabilities: np.ndarray  # float32 (N, 19), what a cell is finally given
    familiarity: np.ndarray | None = None  # float32 (N,), higher = more like the training cells
    unfamiliar: np.ndarray | None = None  # bool (N,), familiarity below the model's threshold


@runtime_checkable
class CellClassifierModel(Protocol):
    """A loaded classifier: crops of one field in, `CellPredictions` out."""

    description: ModelDescription

    @property
    def name(self) -> str: ...

    @property
    def input_size_px(self) -> int: ...

    def predict_cells(self, crops: CellCrops) -> CellPredictions: ...
