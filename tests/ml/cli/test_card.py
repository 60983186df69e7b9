from ml.cli import main
from ml.constants import CLASS_NAMES


def test_card_writes_markdown_beside_the_checkpoint_from_the_checkpoint_alone(tiny_checkpoint, capsys):
    assert main(["card", str(tiny_checkpoint)]) == 0
    card = tiny_checkpoint.with_suffix(".md").read_text()
    assert capsys.readouterr().err.strip() == f"Wrote {tiny_checkpoint.with_suffix('.md')}."
    assert card.startswith("# Model card: tiny-model\n")
    assert "| network | compact CNN (`ml.classifier.network.CellClassifier`), widths 8, 16, dropout 0.0;" in card
    assert "| input | one cell (masked-square-bilinear), 32 x 32 px, channels red, green, blue, yellow" in card
    assert "mean (0.100, 0.200, 0.300, 0.400) and std (0.500, 0.600, 0.700, 0.800)" in card
    assert "No validation metrics were recorded." not in card and "- competition mAP (cells, IoU 0.6): 0.2500" in card


def test_card_of_a_trained_model_has_its_per_class_validation_table(tmp_path, capsys):
    from ml.training.classifier import train
    from tests.ml.training.test_train_api import build_store, tiny

    build_store(tmp_path / "store")
    result = train(tiny(tmp_path))
    assert main(["card", str(result.checkpoint), "--out", "-"]) == 0
    card = capsys.readouterr().out
    assert "| class | image AP |" in card and all(f"| {name} |" in card for name in CLASS_NAMES)
    assert "| epochs run | 3 |" in card and "## Familiarity" in card


def test_card_of_a_file_that_is_not_a_checkpoint_exits_2_with_a_sentence(tmp_path, capsys):
    (tmp_path / "x.pt").write_text("no")
    assert main(["card", str(tmp_path / "x.pt")]) == 2
    assert capsys.readouterr().err.startswith("x.pt is not an hpaweb classifier checkpoint or is damaged")
