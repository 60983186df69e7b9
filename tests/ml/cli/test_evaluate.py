import numpy as np
import pytest

from ml.cli import main
from ml.encoding import SubmissionRow, encode_kaggle_mask, write_submission

SIDE_PX = 16


def block(top: int, left: int) -> str:
    mask = np.zeros((SIDE_PX, SIDE_PX), dtype=bool)
    mask[top : top + 4, left : left + 4] = True
    return encode_kaggle_mask(mask)


def row(image_id: str, *triples: tuple[int, float, str]) -> SubmissionRow:
    text = " ".join(f"{label} {confidence} {mask}" for label, confidence, mask in triples)
    return SubmissionRow(image_id=image_id, width=SIDE_PX, height=SIDE_PX, prediction_string=text)


def test_evaluate_command_prints_map_on_its_last_line(tmp_path, capsys):
    cell_a, cell_b, cell_c = block(0, 0), block(8, 8), block(0, 8)
    write_submission(tmp_path / "solution.csv", [row("a", (0, 1, cell_a), (0, 1, cell_b))])
    write_submission(tmp_path / "submission.csv", [row("a", (0, 0.9, cell_b), (0, 0.8, cell_c))])
    argv = ["evaluate", "--solution", str(tmp_path / "solution.csv"), "--submission", str(tmp_path / "submission.csv")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "mAP=0.5000"  # TP then FP over 2 truths: recall 1/2 at precision 1
    assert lines[1].split()[:3] == ["0", "Nucleoplasm", "0.5000"]


def test_evaluate_command_names_a_missing_file(tmp_path):
    write_submission(tmp_path / "solution.csv", [])
    argv = ["evaluate", "--solution", str(tmp_path / "solution.csv"), "--submission", str(tmp_path / "absent.csv")]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert str(stop.value) == f"{tmp_path / 'absent.csv'} does not exist; pass the path of a CSV file."
