import base64
import io
import json

import numpy as np
import pytest

from ml.encoding import (
    SubmissionRow,
    decode_kaggle_mask,
    decode_rle,
    empty_rle,
    encode_kaggle_mask,
    encode_rle,
    labels_to_rles,
    parse_prediction_string,
    prediction_string,
    read_submission,
    rle_to_kaggle,
    write_submission,
)

# From the competition's evaluation page (see docs/hpa.md).
KAGGLE_VECTOR = "eNqLi8xJM7BOTjS08DT2NfI38DfyM/Q3NMAJgJJ+RkBs7JecF5tnAADw+Q9I"
KAGGLE_VECTOR_WIDTH, KAGGLE_VECTOR_HEIGHT = 1118, 1600


def disks_labels(size_px: int, centres, radius_px: int) -> np.ndarray:
    rows, cols = np.mgrid[:size_px, :size_px]
    labels = np.zeros((size_px, size_px), dtype=np.uint16)
    for label, (row, col) in enumerate(centres, start=1):
        labels[np.hypot(rows - row, cols - col) <= radius_px] = label
    return labels


def per_label_rles(labels: np.ndarray) -> dict[int, dict]:
    """The straightforward reference: encode each label's full-size mask."""
    return {int(label): encode_rle(labels == label) for label in np.unique(labels) if label}


def test_kaggle_test_vector_decodes_to_the_documented_mask():
    mask = decode_kaggle_mask(KAGGLE_VECTOR, height=KAGGLE_VECTOR_HEIGHT, width=KAGGLE_VECTOR_WIDTH)
    assert mask.shape == (1600, 1118) and mask.dtype == bool
    assert mask.sum() == 663
    rows, cols = np.nonzero(mask)
    assert (cols.min(), cols.max()) == (468, 493)
    assert (rows.min(), rows.max()) == (1063, 1090)


def test_kaggle_test_vector_re_encodes_to_the_identical_string():
    mask = decode_kaggle_mask(KAGGLE_VECTOR, height=KAGGLE_VECTOR_HEIGHT, width=KAGGLE_VECTOR_WIDTH)
    assert encode_kaggle_mask(mask) == KAGGLE_VECTOR


def test_encode_rle_is_json_able_and_round_trips():
    mask = np.zeros((7, 5), dtype=bool)
    mask[2:5, 1:4] = True
    mask[6, 4] = True
    rle = encode_rle(mask)
    assert rle["size"] == [7, 5]
    assert isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_rle(json.loads(json.dumps(rle))), mask)


def test_rle_to_kaggle_compresses_counts_at_level_9():
    mask = np.zeros((40, 30), dtype=bool)
    mask[10:20, 5:25] = True
    text = rle_to_kaggle(encode_rle(mask))
    assert base64.b64decode(text)[:2] == b"\x78\xda"  # the zlib header of level 9 ("eN..." in base64)
    np.testing.assert_array_equal(decode_kaggle_mask(text, height=40, width=30), mask)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([[1, 1, 0], [1, 2, 2], [0, 2, 2]], dtype=np.uint16),  # starts at pixel 0, ends at the last pixel
        np.array([[3, 0], [3, 0], [3, 3]], dtype=np.uint16),  # spans the full height
        np.ones((4, 5), dtype=np.uint16),  # fills the image
        np.array([[0, 1, 1], [0, 1, 1]], dtype=np.uint16),  # full-height runs continue across columns
    ],
)
def test_labels_to_rles_equals_encoding_each_label_mask(labels):
    assert labels_to_rles(labels) == per_label_rles(labels)


def test_labels_to_rles_equals_encoding_each_label_on_random_labels():
    rng = np.random.default_rng(7)
    for _ in range(50):
        labels = rng.integers(0, 5, size=tuple(rng.integers(1, 12, size=2))).astype(np.uint16)
        assert labels_to_rles(labels) == per_label_rles(labels)


def test_labels_to_rles_equals_encoding_each_label_on_touching_disks():
    labels = disks_labels(256, [(0, 0), (60, 100), (60, 160), (255, 255), (128, 128)], 40)
    rles = labels_to_rles(labels)
    assert list(rles) == [1, 2, 3, 4, 5]
    for label, rle in rles.items():
        assert rle == encode_rle(labels == label)


def test_labels_to_rles_skips_absent_labels():
    labels = np.array([[0, 1], [3, 3]], dtype=np.uint16)
    assert list(labels_to_rles(labels)) == [1, 3]


def test_labels_to_rles_encodes_every_cell_of_a_2048_field():
    # Speed is measured by `make bench` (mask encoding stage), not here.
    centres = [(row, col) for row in range(150, 2048, 350) for col in range(150, 2048, 350)][:30]
    labels = disks_labels(2048, centres, 160)
    rles = labels_to_rles(labels)
    assert list(rles) == list(range(1, 31))
    assert rles[17] == encode_rle(labels == 17)


def test_empty_rle_decodes_to_background():
    np.testing.assert_array_equal(decode_rle(empty_rle(3, 4)), np.zeros((3, 4), dtype=bool))


def test_prediction_string_writes_one_triple_per_class_in_class_order():
    probabilities = [0.0] * 19
    probabilities[0], probabilities[18] = 0.25, 0.123456789
    text = prediction_string([("MASKA", probabilities)])
    triples = text.split(" ")
    assert len(triples) == 19 * 3
    assert triples[:3] == ["0", "0.25", "MASKA"]
    assert triples[-3:] == ["18", "0.123457", "MASKA"]


def test_prediction_string_drops_classes_below_min_confidence():
    first = [0.0] * 19
    first[2] = 0.5
    second = [0.1] * 19
    second[7] = 0.9
    assert prediction_string([("A", first), ("B", second)], min_confidence=0.5) == "2 0.5 A 7 0.9 B"


def test_prediction_string_rejects_wrong_number_of_probabilities():
    with pytest.raises(ValueError, match="needs 19 class probabilities, got 3"):
        prediction_string([("A", [0.1, 0.2, 0.3])])


def test_parse_prediction_string_reads_triples():
    assert parse_prediction_string("2 0.5 A 7 0.9 B") == [(2, 0.5, "A"), (7, 0.9, "B")]
    assert parse_prediction_string("") == []


def test_parse_prediction_string_rejects_incomplete_triples():
    with pytest.raises(ValueError, match="it has 4 items"):
        parse_prediction_string("2 0.5 A 7")


def test_submission_round_trips_through_a_file(tmp_path):
    rows = [SubmissionRow("img-1", 1118, 1600, f"0 0.5 {KAGGLE_VECTOR}"), SubmissionRow("img-2", 20, 10, "")]
    write_submission(tmp_path / "submission.csv", rows)
    text = (tmp_path / "submission.csv").read_text()
    assert text.splitlines() == [
        "ID,ImageWidth,ImageHeight,PredictionString",
        f"img-1,1118,1600,0 0.5 {KAGGLE_VECTOR}",
        "img-2,20,10,",
    ]
    assert read_submission(tmp_path / "submission.csv") == rows


def test_submission_round_trips_through_a_text_buffer():
    buffer = io.StringIO()
    rows = [SubmissionRow("a", 3, 4, "1 0.25 eNqLi")]
    write_submission(buffer, rows)
    buffer.seek(0)
    assert read_submission(buffer) == rows


def test_read_submission_reads_prediction_strings_beyond_the_csv_default_field_limit(tmp_path):
    crowded = " ".join(f"{label % 19} 0.5 {KAGGLE_VECTOR}" for label in range(19 * 200))  # about 250 KB
    write_submission(tmp_path / "crowded.csv", [SubmissionRow("a", 1118, 1600, crowded)])
    assert read_submission(tmp_path / "crowded.csv")[0].prediction_string == crowded


def test_read_submission_rejects_missing_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("ID,Label\na,1\n")
    with pytest.raises(ValueError, match="bad.csv lacks the column\\(s\\) ImageWidth, ImageHeight, PredictionString"):
        read_submission(tmp_path / "bad.csv")


def test_decode_kaggle_mask_rejects_text_that_is_not_a_mask():
    with pytest.raises(ValueError, match="is not a Kaggle mask string"):
        decode_kaggle_mask("not base64!", height=4, width=4)
