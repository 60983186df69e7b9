import numpy as np
import pytest
import torch

from ml.classifier.familiarity import (
    METHOD,
    QUANTILE_COUNT,
    SINGLE_LAYER_METHOD,
    Familiarity,
    cross_fitted_distances,
    fit_familiarity,
    ledoit_wolf,
    single_layer_block_as_layers,
)


def training_features(count: int = 1000, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc=3.0, scale=2.0, size=(count, size))


def training_layers(count: int = 1000) -> dict[str, np.ndarray]:
    """Three layers of one set of cells, as a network's: the later ones computed from the first."""
    early = training_features(count, size=4)
    mixing = np.random.default_rng(1).normal(size=(4, 6))
    return {
        "stem": early,
        "stage1": early @ mixing + training_features(count, size=6, seed=2),
        "stage2": training_features(count, size=3, seed=3),
    }


def means_of(layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: features.mean(axis=0, keepdims=True) for name, features in layers.items()}


def test_a_cell_at_every_layers_mean_has_familiarity_one_and_is_familiar():
    layers = training_layers()
    scores, unfamiliar = fit_familiarity(layers).score(means_of(layers))
    assert scores.dtype == np.float32 and unfamiliar.dtype == bool
    assert scores.tolist() == [1.0] and unfamiliar.tolist() == [False]


@pytest.mark.parametrize("layer", ["stem", "stage1", "stage2"])
def test_a_cell_far_off_in_one_layer_only_is_unfamiliar(layer):
    layers = training_layers()
    familiarity = fit_familiarity(layers)
    probe = means_of(layers)
    probe[layer] = probe[layer] + 100.0
    scores, unfamiliar = familiarity.score(probe)
    assert unfamiliar.tolist() == [True]
    # Its smallest tail probability is 0: at most the few training cells at a layer's maximum are as unusual.
    assert scores[0] == np.float32(np.interp(0.0, familiarity.combined_quantiles, np.linspace(0, 1, QUANTILE_COUNT)))
    assert scores[0] <= 3 / 1000


def test_the_flag_is_any_layer_beyond_its_threshold():
    familiarity = fit_familiarity(training_layers())
    thresholds = np.asarray(familiarity.thresholds)
    just_beyond = np.diag(thresholds + 1e-9) + np.where(np.eye(3), 0.0, 0.5 * thresholds)
    assert familiarity.unfamiliar_at(just_beyond).tolist() == [True, True, True]
    assert familiarity.unfamiliar_at(thresholds[None, :]).tolist() == [False]


def test_the_thresholds_flag_one_percent_of_the_cross_fitted_training_cells():
    layers = training_layers(count=1000)
    familiarity = fit_familiarity(layers)
    distances, calibration = cross_fitted_distances(layers)
    assert int(familiarity.unfamiliar_at(distances).sum()) == 10
    assert familiarity.percentile == 99.0 and familiarity.training_cells == 1000
    assert familiarity.calibration == calibration
    assert calibration == "each training cell measured by a description fitted without it (5 folds of cells)"
    # Combining layers demands more of each: each threshold lies beyond that layer's own 99th percentile.
    assert all(familiarity.thresholds > np.percentile(distances, 99, axis=0))


def test_familiarity_of_the_training_cells_is_the_share_at_least_as_unusual():
    layers = training_layers(count=1000)
    familiarity = fit_familiarity(layers)
    distances, _calibration = cross_fitted_distances(layers)
    scores = familiarity.familiarity_of(distances)
    # Uniform on the training cells themselves, as a p-value is under its null.
    np.testing.assert_allclose(np.quantile(scores, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], rtol=0, atol=2e-3)


def test_one_layer_is_the_share_of_training_cells_at_least_as_far():
    features = training_features()
    familiarity = fit_familiarity({"stage1": features})
    at_quantiles = familiarity.layers[0].distance_quantiles[[250, 500, 900]]
    np.testing.assert_allclose(familiarity.familiarity_of(at_quantiles[:, None]), [0.75, 0.5, 0.1], atol=2e-3)


def test_new_cells_like_the_training_cells_are_rarely_unfamiliar():
    rng = np.random.default_rng(3)
    mixing = rng.normal(size=(32, 32))

    def cells(count):
        early = rng.normal(size=(count, 32)) @ mixing
        return {"stem": early, "stage1": np.maximum(early @ mixing, 0.0)}

    _scores, unfamiliar = fit_familiarity(cells(1500)).score(cells(3000))
    assert unfamiliar.mean() <= 0.02


def test_cross_fitting_holds_out_whole_fields_in_every_layer():
    layers = {"stem": training_features(count=60, size=3), "stage1": training_features(count=60, size=2, seed=5)}
    fields = np.repeat(np.arange(6), 10)  # six fields of ten cells; fields 0 and 5 share fold 0
    distances, calibration = cross_fitted_distances(layers, groups=fields)
    others = (fields != 0) & (fields != 5)
    expected = fit_familiarity({name: features[others] for name, features in layers.items()}).distances(
        {name: features[fields == 0] for name, features in layers.items()}
    )
    np.testing.assert_allclose(distances[fields == 0], expected, rtol=1e-12)
    assert calibration == "each training cell measured by a description fitted without it (5 folds of fields)"


def test_fewer_fields_than_folds_are_cross_fitted_by_cell():
    features = {"stem": training_features(count=12, size=2)}
    _distances, calibration = cross_fitted_distances(features, groups=np.repeat([0, 1], 6))
    assert calibration.endswith("(5 folds of cells)")


def test_distances_are_mahalanobis_under_each_layers_stored_covariance():
    layers = {"stem": training_features(count=200, size=3), "stage1": training_features(count=200, size=2, seed=4)}
    familiarity = fit_familiarity(layers)
    distances = familiarity.distances({name: features[:5] for name, features in layers.items()})
    assert distances.shape == (5, 2)
    for row, features in enumerate(layers.values()):
        centred = features[:5] - features.mean(axis=0)
        inverse = np.linalg.inv(familiarity.layers[row].covariance)
        expected = np.sqrt(np.einsum("ni,ij,nj->n", centred, inverse, centred))
        np.testing.assert_allclose(distances[:, row], expected, rtol=1e-10)


def test_ledoit_wolf_leaves_an_isotropic_sample_covariance_unshrunk():
    centred = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    covariance, shrinkage = ledoit_wolf(centred)
    assert shrinkage == 0.0
    np.testing.assert_array_equal(covariance, [[0.5, 0.0], [0.0, 0.5]])


def test_ledoit_wolf_makes_the_covariance_of_fewer_cells_than_features_invertible():
    features = np.random.default_rng(1).normal(size=(5, 20))  # the sample covariance has rank 4
    covariance, shrinkage = ledoit_wolf(features - features.mean(axis=0))
    assert 0.0 < shrinkage <= 1.0
    assert np.linalg.eigvalsh(covariance).min() > 0


def test_a_feature_that_never_varies_keeps_the_description_usable():
    features = training_features(count=300, size=4)
    features[:, 2] = 0.0  # a ReLU that never fires on the training cells
    familiarity = fit_familiarity({"stem": features})
    assert np.isfinite(familiarity.distances({"stem": features})).all()


def test_familiarity_round_trips_as_plain_data_through_a_weights_only_file(tmp_path):
    layers = {"stem": training_features(count=50, size=3), "stage1": training_features(count=50, size=2, seed=6)}
    familiarity = fit_familiarity(layers)
    block = familiarity.to_plain()
    assert block["method"] == METHOD and block["training_cells"] == 50
    assert [(layer["name"], layer["feature_size"]) for layer in block["layers"]] == [("stem", 3), ("stage1", 2)]
    assert len(block["combined_quantiles"]) == QUANTILE_COUNT
    assert all(len(layer["distance_quantiles"]) == QUANTILE_COUNT for layer in block["layers"])
    torch.save({"familiarity": block}, tmp_path / "block.pt")
    restored = Familiarity.from_plain(torch.load(tmp_path / "block.pt", weights_only=True)["familiarity"])
    probe = {name: features[:7] * 1.5 for name, features in layers.items()}
    np.testing.assert_array_equal(restored.score(probe)[0], familiarity.score(probe)[0])
    np.testing.assert_array_equal(restored.score(probe)[1], familiarity.score(probe)[1])
    assert restored.thresholds == familiarity.thresholds and restored.layer_names == ("stem", "stage1")


def single_layer_block(features: np.ndarray) -> dict:
    """The block the earlier method wrote: one Gaussian on the penultimate features."""
    one = fit_familiarity({"penultimate": features})
    layer = one.layers[0]
    distances, calibration = cross_fitted_distances({"penultimate": features})
    return {
        "method": SINGLE_LAYER_METHOD,
        "feature_size": layer.feature_size,
        "percentile": 99.0,
        "threshold": float(np.percentile(distances[:, 0], 99)),
        "training_cells": len(features),
        "shrinkage": layer.shrinkage,
        "calibration": calibration,
        "mean": layer.mean.tolist(),
        "covariance": layer.covariance.tolist(),
        "distance_quantiles": layer.distance_quantiles.tolist(),
    }


def test_a_single_layer_block_scores_exactly_as_the_earlier_method():
    features = training_features(count=400, size=5)
    block = single_layer_block(features)
    familiarity = Familiarity.from_plain(single_layer_block_as_layers(block, layer="stage4"))
    assert familiarity.layer_names == ("stage4",) and familiarity.thresholds == (block["threshold"],)
    probe = np.concatenate([training_features(count=300, size=5, seed=9) * 1.3, features[:1] + 50.0])
    scores, unfamiliar = familiarity.score({"stage4": probe})
    # The earlier method: familiarity = 1 - the level of the distance among the training distances.
    centred = probe - np.asarray(block["mean"])
    distances = np.sqrt(np.einsum("ni,ij,nj->n", centred, np.linalg.inv(np.asarray(block["covariance"])), centred))
    levels = np.linspace(0.0, 1.0, QUANTILE_COUNT)
    earlier = (1.0 - np.interp(distances, block["distance_quantiles"], levels)).astype(np.float32)
    np.testing.assert_allclose(scores, earlier, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(unfamiliar, distances > block["threshold"])
    assert scores[-1] == 0.0 and unfamiliar[-1] and 0 < unfamiliar.sum() < len(probe)


def test_a_block_of_the_current_method_is_not_converted():
    block = fit_familiarity({"stem": training_features(count=20, size=3)}).to_plain()
    assert single_layer_block_as_layers(block, layer="stage4") is block


def test_a_single_layer_block_without_its_keys_names_them():
    with pytest.raises(ValueError, match="^feature_size, percentile, threshold, .* missing$"):
        single_layer_block_as_layers({"method": SINGLE_LAYER_METHOD}, layer="stage4")


def plain_block(**change) -> dict:
    layers = {"stem": training_features(count=20, size=3)}
    return {**fit_familiarity(layers).to_plain(), **change}


def layer_change(**change) -> dict:
    block = plain_block()
    return {**block, "layers": [{**block["layers"][0], **change}]}


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        (plain_block(method="knn"), "method 'knn' is not 'mahalanobis-layers-min-p'"),
        (plain_block(layers=[]), "layers must be a non-empty list"),
        (plain_block(percentile=100.0), "percentile 100.0 is outside 0..100"),
        (plain_block(training_cells="many"), "a value has the wrong type"),
        (plain_block(combined_quantiles=[2.0, 1.0]), "combined_quantiles must be at least two non-decreasing finite"),
        (layer_change(mean=[0.0, 0.0]), r"layer stem: mean has shape \(2,\) instead of 3 values \(feature_size\)"),
        (layer_change(covariance=[[1.0, 0.0, 0.0]]), r"layer stem: covariance has shape \(1, 3\) instead of 3 x 3"),
        (
            layer_change(covariance=[[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]),
            "layer stem: covariance is not positive definite",
        ),
        (layer_change(distance_quantiles=[2.0, 1.0]), "layer stem: distance_quantiles must be at least two"),
        (layer_change(threshold=float("nan")), "layer stem: it holds a value that is not a finite number"),
    ],
)
def test_a_malformed_block_names_what_is_wrong(block, problem):
    with pytest.raises(ValueError, match=f"^{problem}"):
        Familiarity.from_plain(block)


def test_a_block_without_its_keys_names_them():
    block = {k: v for k, v in plain_block().items() if k not in ("percentile", "layers")}
    with pytest.raises(ValueError, match="^percentile, layers missing$"):
        Familiarity.from_plain(block)


def test_a_block_naming_a_layer_twice_is_refused():
    block = plain_block()
    with pytest.raises(ValueError, match="^layers stem, stem name a layer twice$"):
        Familiarity.from_plain({**block, "layers": block["layers"] * 2})


@pytest.mark.parametrize(
    "layers",
    [{"stem": np.zeros((2, 4))}, {"stem": np.zeros((5, 4)), "stage1": np.zeros((4, 2))}, {}],
)
def test_fitting_needs_at_least_three_cells_in_every_layer(layers):
    with pytest.raises(ValueError, match=r"needs the features of at least 3 cells as \(N, D\), the same N in every"):
        fit_familiarity(layers)
