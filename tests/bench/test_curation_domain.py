"""The shifted domain of `python -m bench.curation`: bleed-through and averaging down, truth kept in step,
the generator style, and the scripted user's own starting model."""

import numpy as np
import pytest
from PIL import Image

from bench.curation import Biologist, _unshown, domain_fields, domain_name, fields_showing
from ml.encoding import decode_kaggle_mask, parse_prediction_string, read_submission


def test_fields_averaged_down_keep_their_true_masks_in_step(tmp_path):
    drawn = domain_fields(tmp_path / "plain", count=2, seed=3, size_px=256, bleed=0.0)
    small = domain_fields(tmp_path / "small", count=2, seed=3, size_px=128, bleed=2.0, downscale=2)
    plain_rows = {row.image_id: row for row in read_submission(drawn / "solution.csv")}
    small_rows = {row.image_id: row for row in read_submission(small / "solution.csv")}
    assert (
        set(small_rows) == set(plain_rows) and (small / "train.csv").read_bytes() == (drawn / "train.csv").read_bytes()
    )
    for image_id, row in small_rows.items():
        assert (row.width, row.height) == (128, 128)
        big = {
            channel: np.asarray(Image.open(drawn / f"{image_id}_{channel}.png"), np.float64)
            for channel in ("green", "yellow")
        }
        green = np.asarray(Image.open(small / f"{image_id}_green.png"))
        expected = np.clip(np.round(big["green"] + 2.0 * big["yellow"]), 0, 255)
        expected = np.clip(np.round(expected.reshape(128, 2, 128, 2).mean(axis=(1, 3))), 0, 255)
        assert green.shape == (128, 128) and np.array_equal(green, expected.astype(np.uint8))
        big_masks = parse_prediction_string(plain_rows[image_id].prediction_string)
        small_masks = parse_prediction_string(row.prediction_string)
        assert [label for label, _, _ in small_masks] == [label for label, _, _ in big_masks]
        for (_, _, big_mask), (_, _, small_mask) in zip(big_masks, small_masks, strict=True):
            area = decode_kaggle_mask(big_mask, height=256, width=256).sum()
            assert abs(4 * decode_kaggle_mask(small_mask, height=128, width=128).sum() - area) <= 0.1 * area + 8
    assert "averaged down 2 times" in domain_name(2.0, 2) and "averaged" not in domain_name()


def test_the_domain_is_drawn_by_the_chosen_generator_style(tmp_path):
    v1 = domain_fields(tmp_path / "v1", count=1, seed=5, size_px=128, bleed=0.0, style="v1")
    v2 = domain_fields(tmp_path / "v2", count=1, seed=5, size_px=128, bleed=0.0, style="v2")
    assert (tmp_path / "curation-v1-128px-s5-raw").is_dir() and (tmp_path / "curation-v2-128px-s5-raw").is_dir()
    (v1_green,), (v2_green,) = sorted(v1.glob("*_green.png")), sorted(v2.glob("*_green.png"))
    assert not np.array_equal(np.asarray(Image.open(v1_green)), np.asarray(Image.open(v2_green)))
    assert domain_name(0.0, style="v1") == "synthetic v1 fields as drawn"
    assert "green' = green + 3 * yellow" in domain_name() and domain_name().startswith("synthetic v2 fields")


@pytest.mark.django_db
def test_the_scripted_user_imports_its_starting_model_through_the_api(settings, owner_api, tiny_classifier_file):
    settings.HPAWEB_PRIVATE_MODELS = True
    imported = Biologist(owner_api).import_model(tiny_classifier_file)
    listed = owner_api.get("/api/models/").json()["results"]
    assert imported["id"] in [model["id"] for model in listed if not model["is_default"]]
    settings.HPAWEB_PRIVATE_MODELS = False
    with pytest.raises(RuntimeError, match="answered 403"):
        Biologist(owner_api).import_model(tiny_classifier_file)


def test_another_channel_can_bleed_into_the_protein_one(tmp_path):
    drawn = domain_fields(tmp_path / "plain", count=1, seed=4, size_px=128, bleed=0.0)
    dapi = domain_fields(tmp_path / "dapi", count=1, seed=4, size_px=128, bleed=2.0, source="blue")
    (image_id,) = [path.name.removesuffix("_green.png") for path in dapi.glob("*_green.png")]
    planes = {c: np.asarray(Image.open(drawn / f"{image_id}_{c}.png"), np.float64) for c in ("green", "blue")}
    expected = np.clip(np.round(planes["green"] + 2.0 * planes["blue"]), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(dapi / f"{image_id}_green.png")), expected)
    assert "DAPI bleed-through" in domain_name(2.0, source="blue") and "2 * blue" in domain_name(2.0, source="blue")


def test_fields_showing_the_held_out_classes_cover_them_before_filling_up():
    labels = {"a": "0", "b": "0|5", "c": "7", "d": "5|7|11", "e": "3", "f": "0"}
    pool = ["a", "b", "c", "d", "e", "f"]
    # b and d each show two of the wanted classes, b first; then c (the first with 7); a fills up.
    assert fields_showing(labels, {0, 5, 7}, pool, 3) == ["b", "c", "a"]
    assert fields_showing(labels, {0, 5, 7}, pool, 1) == ["b"]
    assert fields_showing(labels, {5, 7, 11}, pool, 2) == ["d", "a"]
    assert fields_showing(labels, {3}, pool, 2) == ["e", "a"]
    # Classes no pool field shows leave the pool's order alone.
    assert fields_showing(labels, {9}, pool, 2) == ["a", "b"]
    assert _unshown(labels, ["d", "e"], ["a", "b"]) == [3, 7, 11]
