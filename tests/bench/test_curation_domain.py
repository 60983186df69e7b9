"""The shifted domain of `python -m bench.curation`: bleed-through and averaging down, truth kept in step."""

import numpy as np
from PIL import Image

from bench.curation import domain_fields, domain_name
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
