"""How like its training cells a cell looks to the classifier: a familiarity score and a flag.

A classifier is only as good as the cells it was trained on; on anything else (a real HPA
image shown to a model trained on synthetic fields, another stain, another microscope) it is
still confident, and its confidence means nothing. So every classifier checkpoint carries a
description of its training cells in the classifier's own terms and every predicted cell is
compared with it.

The method is the feature ensemble of Lee et al. (2018, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks", NeurIPS): a Gaussian on the globally
average-pooled activations of every block of the network (`CellClassifier.pooled_layers`: the
stem and each stage, the last being the penultimate features), one Mahalanobis distance per
layer, sqrt((x - mean)^T covariance^-1 (x - mean)), and one score from all of them. Why several
layers: the penultimate layer keeps what separates the classes and discards the rest, while the
early layers still see the image's low-level statistics (edges, background, intensity range), in
which another domain differs first; with that layer alone the shipped model called real HPA
cells as familiar as its synthetic ones (AUROC 0.61). How this follows the paper and where not:
- one Gaussian per layer over all cells rather than one per class with a tied covariance: a
  cell here has any number of the 19 classes and, in training, only its field's labels, so there
  is no class to condition on; the paper's class-conditional distance is a minimum over classes
  of the same quantity;
- no input perturbation (it costs a backward pass per batch; the score must come from the
  forward pass that classifies, at a few per cent of its time);
- the paper weights the layers by a logistic regression fitted on out-of-distribution samples;
  nothing here may be fitted on such data, so the layers are combined without weights, as tests:
  each layer's distance becomes its tail probability p_l, the share of (cross-fitted) training
  cells at least as far in that layer, and the cell's statistic is the smallest, min_l p_l. The
  minimum p-value is the combination that stays sensitive to a cell off in ONE layer only (the
  expected case: early layers shifted, late layers not). Fisher's method (-2 sum log p_l) assumes
  independent layers, which successive layers of one network are not, and it dilutes one extreme
  layer among four typical ones: one layer at its training 99.9th percentile (p = 0.001) and
  four at their medians (p = 0.5) sum to 19.4, under chi-square(10)'s 99th percentile (23.2),
  so such a cell would not be flagged. Bonferroni's correction (L * min_l p_l) bounds the
  minimum's false-alarm rate whatever the dependence, but for dependent layers it flags fewer
  than the intended 1 % (anywhere down to 1 % / L, for identical layers); so the minimum is calibrated
  instead on the training cells themselves (Westfall and Young's min-p adjustment, with the
  cross-fitted training cells as the null sample): familiarity = the share of training cells
  whose min_l p_l is at most the cell's (1 = as typical as the most typical training cell,
  0 = more unusual than every one of them).
A cell is `unfamiliar` when its min_l p_l is below the 1st percentile (100 - `percentile`) of the
training cells', so 1 % of the (cross-fitted) training cells are flagged: equivalently, when any
layer's distance exceeds that layer's `threshold`, the distance whose tail probability is that
percentile. It is fixed on the training cells before any real data is seen and never tuned to it.

Each layer's covariance is Ledoit-Wolf shrunk: the covariance of a few thousand cells in up to
128 dimensions is noisy and ReLU features have dimensions that barely vary, which makes the
sample covariance ill-conditioned; Ledoit-Wolf shrinkage towards a scaled identity (Ledoit and
Wolf, 2004; the same estimate as scikit-learn's `LedoitWolf`) picks the shrinkage that minimises
the expected error from the data alone, with nothing to tune. A tiny ridge (1e-9 of the mean
variance) keeps the matrix invertible even when the estimate shrinks nothing.

The training distances are cross-fitted: each training cell is measured by a description fitted
without it (5 folds of whole fields, `groups`; of single cells when there are fewer than 5
fields), while new cells are measured by the description of all cells. In-sample distances are
too short, because the covariance was shaped by the very cells it measures: for the shipped
model's penultimate layer, 128 features and 3,862 cells, the in-sample 99th percentile flagged
15 % of held-out synthetic cells from the same generator, the cross-fitted one 0.2 %. Whole
fields go to one fold because the cells of a field share its staining and optics.

In a checkpoint the description is plain data under "familiarity" (`Familiarity.to_plain`):
{"method", "percentile", "training_cells", "calibration" (how the training distances were
measured, a sentence), "combined_quantiles" (1001 floats: the training cells' min_l p_l at levels
0, 0.001, ..., 1), "layers": [{"name", "feature_size", "shrinkage", "threshold", "mean"
(feature_size floats), "covariance" (feature_size rows of feature_size floats),
"distance_quantiles" (1001 floats, the layer's cross-fitted training distances at levels 0,
0.001, ..., 1)}, ...]}. A block of the earlier single-layer method ("mahalanobis-ledoit-wolf",
the penultimate layer alone) still loads (`single_layer_block_as_layers`) and scores exactly as
it did: its one layer's tail probability is its familiarity, its threshold its flag.
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

METHOD = "mahalanobis-layers-min-p"
SINGLE_LAYER_METHOD = "mahalanobis-ledoit-wolf"  # the earlier block: the penultimate layer alone
DEFAULT_PERCENTILE = 99.0
FOLDS = 5
QUANTILE_COUNT = 1001  # levels 0, 0.001, ..., 1
RIDGE = 1e-9  # of the mean variance, added to the diagonal
PLAIN_KEYS: tuple[str, ...] = ("method", "percentile", "training_cells", "calibration", "combined_quantiles", "layers")
LAYER_KEYS: tuple[str, ...] = (
    "name",
    "feature_size",
    "shrinkage",
    "threshold",
    "mean",
    "covariance",
    "distance_quantiles",
)
SINGLE_LAYER_KEYS: tuple[str, ...] = (
    "method",
    "feature_size",
    "percentile",
    "threshold",
    "training_cells",
    "shrinkage",
    "calibration",
    "mean",
    "covariance",
    "distance_quantiles",
)


@dataclass(frozen=True, eq=False)
class LayerGaussian:
    """The training cells' pooled features of one layer: a Gaussian and their distances from it."""

    name: str
    mean: np.ndarray  # float64 (D,)
    covariance: np.ndarray  # float64 (D, D), shrunk
    shrinkage: float  # the Ledoit-Wolf weight of the scaled identity, 0..1
    distance_quantiles: np.ndarray  # float64 (QUANTILE_COUNT,), the cross-fitted training distances
    threshold: float  # a distance above it makes a cell unfamiliar
    # Inverse of the covariance's Cholesky factor: distance = |whitening @ (x - mean)|.
    _whitening: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_whitening", _whitening(self.covariance))

    @property
    def feature_size(self) -> int:
        return len(self.mean)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """float64 (N,) Mahalanobis distances of (N, D) features from the training mean."""
        return _mahalanobis(features, self.mean, self._whitening)

    def tail_probabilities(self, distances: np.ndarray) -> np.ndarray:
        """float64 (N,) in [0, 1]: the share of training cells at least as far as each distance."""
        return 1.0 - np.interp(distances, self.distance_quantiles, _levels(len(self.distance_quantiles)))

    def to_plain(self) -> dict:
        return {
            "name": self.name,
            "feature_size": self.feature_size,
            "shrinkage": float(self.shrinkage),
            "threshold": float(self.threshold),
            "mean": self.mean.tolist(),
            "covariance": self.covariance.tolist(),
            "distance_quantiles": self.distance_quantiles.tolist(),
        }


@dataclass(frozen=True, eq=False)
class Familiarity:
    """A description of a classifier's training cells, and the scores of new cells against it."""

    layers: tuple[LayerGaussian, ...]  # in the network's order
    combined_quantiles: np.ndarray  # float64 (QUANTILE_COUNT,), the training cells' min_l p_l
    percentile: float  # of the training cells, where the flag starts
    training_cells: int
    calibration: str  # how the training distances were measured

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def layer_sizes(self) -> dict[str, int]:
        return {layer.name: layer.feature_size for layer in self.layers}

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Each layer's distance beyond which a cell is unfamiliar."""
        return tuple(layer.threshold for layer in self.layers)

    def distances(self, layer_features: Mapping[str, np.ndarray]) -> np.ndarray:
        """float64 (N, layers) Mahalanobis distances, from {layer name: (N, D) pooled features}."""
        return np.stack([layer.distances(layer_features[layer.name]) for layer in self.layers], axis=1)

    def familiarity_of(self, distances: np.ndarray) -> np.ndarray:
        """float32 (N,) in [0, 1] of (N, layers) distances: the share of training cells whose
        smallest per-layer tail probability is at most each cell's."""
        tails = np.stack([layer.tail_probabilities(distances[:, row]) for row, layer in enumerate(self.layers)], axis=1)
        smallest = tails.min(axis=1)
        return np.interp(smallest, self.combined_quantiles, _levels(len(self.combined_quantiles))).astype(np.float32)

    def unfamiliar_at(self, distances: np.ndarray) -> np.ndarray:
        """bool (N,): some layer's distance (of (N, layers)) beyond that layer's threshold."""
        return (distances > np.asarray(self.thresholds)).any(axis=1)

    def score(self, layer_features: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(familiarity float32 (N,), unfamiliar bool (N,)) of {layer name: (N, D) pooled features}."""
        distances = self.distances(layer_features)
        return self.familiarity_of(distances), self.unfamiliar_at(distances)

    def to_plain(self) -> dict:
        """The checkpoint's "familiarity" block: numbers, strings and lists only."""
        return {
            "method": METHOD,
            "percentile": float(self.percentile),
            "training_cells": int(self.training_cells),
            "calibration": self.calibration,
            "combined_quantiles": self.combined_quantiles.tolist(),
            "layers": [layer.to_plain() for layer in self.layers],
        }

    @classmethod
    def from_plain(cls, block: object) -> "Familiarity":
        """The description a checkpoint's "familiarity" block holds; ValueError naming what is wrong."""
        if not isinstance(block, Mapping):
            raise ValueError("it is not a mapping")
        missing = [key for key in PLAIN_KEYS if key not in block]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing")
        if block["method"] != METHOD:
            raise ValueError(f"method {block['method']!r} is not {METHOD!r}")
        try:
            percentile, training_cells = float(block["percentile"]), int(block["training_cells"])
            calibration = str(block["calibration"])
            combined = np.asarray(block["combined_quantiles"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("a value has the wrong type") from None
        if not isinstance(block["layers"], list) or not block["layers"]:
            raise ValueError("layers must be a non-empty list")
        _check_quantiles(combined, "combined_quantiles")
        if not np.isfinite(percentile) or not 0.0 < percentile < 100.0:
            raise ValueError(f"percentile {percentile} is outside 0..100")
        if training_cells < 2:
            raise ValueError(f"training_cells {training_cells} is below 2")
        layers = tuple(_layer_from_plain(layer) for layer in block["layers"])
        names = [layer.name for layer in layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layers {', '.join(names)} name a layer twice")
        return cls(
            layers=layers,
            combined_quantiles=combined,
            percentile=percentile,
            training_cells=training_cells,
            calibration=calibration,
        )


def single_layer_block_as_layers(block: object, *, layer: str) -> object:
    """An earlier single-layer block ("mahalanobis-ledoit-wolf", the penultimate features
    alone) as the block of a one-layer description of `layer`, which scores as it did: with one
    layer, min_l p_l is that layer's tail probability, already the old familiarity, so the
    combined quantiles are the identity; anything else comes back unchanged."""
    if not isinstance(block, Mapping) or block.get("method") != SINGLE_LAYER_METHOD:
        return block
    missing = [key for key in SINGLE_LAYER_KEYS if key not in block]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing")
    try:
        count = len(block["distance_quantiles"])
    except TypeError:
        raise ValueError("a value has the wrong type") from None
    return {
        "method": METHOD,
        "percentile": block["percentile"],
        "training_cells": block["training_cells"],
        "calibration": block["calibration"],
        "combined_quantiles": _levels(count).tolist(),
        "layers": [{"name": layer, **{key: block[key] for key in LAYER_KEYS if key != "name"}}],
    }


def fit_familiarity(
    layer_features: Mapping[str, np.ndarray],
    *,
    groups: np.ndarray | None = None,
    percentile: float = DEFAULT_PERCENTILE,
) -> Familiarity:
    """The description of the training cells whose pooled features are given, {layer name:
    (N, D)} in the network's order. `groups` (N,) names each cell's field, so that
    cross-fitting holds out whole fields."""
    named = {name: np.asarray(features, dtype=np.float64) for name, features in layer_features.items()}
    counts = {len(features) for features in named.values()}
    if not named or any(features.ndim != 2 for features in named.values()) or len(counts) != 1 or min(counts) < 3:
        shapes = ", ".join(f"{name} {features.shape}" for name, features in named.items()) or "no layers"
        raise ValueError(
            f"Familiarity needs the features of at least 3 cells as (N, D), the same N in every layer, got {shapes}."
        )
    distances, calibration = cross_fitted_distances(named, groups=groups)
    levels = _levels(QUANTILE_COUNT)
    quantiles = np.quantile(distances, levels, axis=0)  # (QUANTILE_COUNT, layers)
    tails = np.stack([1.0 - np.interp(distances[:, row], quantiles[:, row], levels) for row in range(len(named))], 1)
    smallest = tails.min(axis=1)
    cutoff = float(np.percentile(smallest, 100.0 - percentile))
    layers = []
    for row, (name, features) in enumerate(named.items()):
        mean, covariance, shrinkage = _gaussian(features)
        layers.append(
            LayerGaussian(
                name=name,
                mean=mean,
                covariance=covariance,
                shrinkage=shrinkage,
                distance_quantiles=quantiles[:, row],
                # The distance whose tail probability is the cutoff: beyond it, min_l p_l < cutoff.
                threshold=float(np.interp(1.0 - cutoff, levels, quantiles[:, row])),
            )
        )
    return Familiarity(
        layers=tuple(layers),
        combined_quantiles=np.quantile(smallest, levels),
        percentile=percentile,
        training_cells=counts.pop(),
        calibration=calibration,
    )


def cross_fitted_distances(
    layer_features: Mapping[str, np.ndarray], *, groups: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """(float64 (N, layers) distance of each cell in each layer from the description of the
    other folds, how they were split).

    Fold k holds the groups of rank k, k + 5, ... (cells of one group stay together); with fewer
    than 5 groups, or a fold whose complement has fewer than 2 cells, the cells themselves are
    dealt into the folds. Every layer uses the same folds.
    """
    named = [np.asarray(features, dtype=np.float64) for features in layer_features.values()]
    count = len(named[0])
    folds = _folds(np.arange(count) if groups is None else np.asarray(groups))
    unit = "cells" if groups is None else "fields"
    if folds is None:
        folds, unit = _folds(np.arange(count)), "cells"
    distances = np.empty((count, len(named)))
    for fold in np.unique(folds):
        held_out = folds == fold
        for row, features in enumerate(named):
            mean, covariance, _shrinkage = _gaussian(features[~held_out])
            distances[held_out, row] = _mahalanobis(features[held_out], mean, _whitening(covariance))
    fold_count = len(np.unique(folds))
    return distances, f"each training cell measured by a description fitted without it ({fold_count} folds of {unit})"


def _layer_from_plain(block: object) -> LayerGaussian:
    if not isinstance(block, Mapping):
        raise ValueError("a layer is not a mapping")
    missing = [key for key in LAYER_KEYS if key not in block]
    if missing:
        raise ValueError(f"layer {block.get('name', '?')}: {', '.join(missing)} missing")
    name = str(block["name"])
    try:
        size = int(block["feature_size"])
        mean = np.asarray(block["mean"], dtype=np.float64)
        covariance = np.asarray(block["covariance"], dtype=np.float64)
        quantiles = np.asarray(block["distance_quantiles"], dtype=np.float64)
        threshold, shrinkage = float(block["threshold"]), float(block["shrinkage"])
    except (TypeError, ValueError):
        raise ValueError(f"layer {name}: a value has the wrong type") from None
    if mean.shape != (size,):
        raise ValueError(f"layer {name}: mean has shape {mean.shape} instead of {size} values (feature_size)")
    if covariance.shape != (size, size):
        raise ValueError(f"layer {name}: covariance has shape {covariance.shape} instead of {size} x {size}")
    try:
        _check_quantiles(quantiles, "distance_quantiles")
    except ValueError as error:
        raise ValueError(f"layer {name}: {error}") from None
    if not np.isfinite(np.concatenate([mean, covariance.ravel(), [threshold, shrinkage]])).all():
        raise ValueError(f"layer {name}: it holds a value that is not a finite number")
    try:
        return LayerGaussian(
            name=name,
            mean=mean,
            covariance=covariance,
            shrinkage=shrinkage,
            distance_quantiles=quantiles,
            threshold=threshold,
        )
    except np.linalg.LinAlgError:
        raise ValueError(f"layer {name}: covariance is not positive definite") from None


def _check_quantiles(quantiles: np.ndarray, key: str) -> None:
    if quantiles.ndim != 1 or len(quantiles) < 2 or not np.isfinite(quantiles).all() or np.any(np.diff(quantiles) < 0):
        raise ValueError(f"{key} must be at least two non-decreasing finite numbers")


def _levels(count: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, count)


def _folds(groups: np.ndarray) -> np.ndarray | None:
    """The fold of each cell, its group's rank modulo FOLDS; None where that leaves a fold's
    complement with fewer than 2 cells or there are fewer than 2 groups."""
    _, ranks = np.unique(groups, return_inverse=True)
    if ranks.max(initial=0) + 1 < min(FOLDS, len(groups)):
        return None
    folds = ranks % FOLDS
    if any(np.count_nonzero(folds != fold) < 2 for fold in np.unique(folds)):
        return None
    return folds


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, Ledoit-Wolf covariance with its ridge, shrinkage) of (N, D) features."""
    mean = features.mean(axis=0)
    covariance, shrinkage = ledoit_wolf(features - mean)
    covariance[np.diag_indices_from(covariance)] += RIDGE * max(float(np.trace(covariance)) / len(mean), 1e-12)
    return mean, covariance, shrinkage


def ledoit_wolf(centred: np.ndarray) -> tuple[np.ndarray, float]:
    """(shrunk covariance (D, D), shrinkage) of centred (N, D) samples, after Ledoit and Wolf (2004).

    (1 - s) * sample covariance + s * (trace / D) * identity, with the s that minimises the
    expected squared error; the same estimate as scikit-learn's `ledoit_wolf` (which this follows).
    """
    count, size = centred.shape
    sample = centred.T @ centred / count
    scale = float(np.trace(sample)) / size
    squares = centred**2
    # beta: the variance of the sample covariance's entries; delta: its distance from scale * I.
    beta = (float(np.sum(squares.T @ squares)) / count - float(np.sum(sample**2))) / (count * size)
    delta = (float(np.sum(sample**2)) - 2 * scale * float(np.trace(sample)) + size * scale**2) / size
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    shrunk = (1.0 - shrinkage) * sample
    shrunk[np.diag_indices_from(shrunk)] += shrinkage * scale
    return shrunk, shrinkage


def _whitening(covariance: np.ndarray) -> np.ndarray:
    """The inverse of the covariance's Cholesky factor L (covariance = L L^T); LinAlgError when
    the covariance is not positive definite."""
    return np.linalg.inv(np.linalg.cholesky(covariance))


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """The process's thread pools, found once (threadpoolctl's advice: a limit from it costs a tenth of
    `threadpool_limits`, which looks them up again each time)."""
    return ThreadpoolController()


def _mahalanobis(features: np.ndarray, mean: np.ndarray, whitening: np.ndarray) -> np.ndarray:
    centred = np.asarray(features, dtype=np.float64) - mean
    # One BLAS thread (the same product, bit for bit): after a product of this size OpenBLAS's other
    # threads busy-wait for about 0.1 s of CPU, which the worker's measurement and picture threads need.
    with _blas_controller().limit(limits=1, user_api="blas"):
        whitened = centred @ whitening.T
    return np.linalg.norm(whitened, axis=1)
