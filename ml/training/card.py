"""A model card (Markdown) written from a classifier checkpoint alone (`python -m ml card CKPT`).

Everything in it is read from the checkpoint: its name and summary, architecture and
preprocessing, the data it was trained on, how, and its validation metrics per class.
"""

from pathlib import Path

from ml.checkpoints import BACKBONE_ARCHITECTURE, PREPROCESSING, load_classifier_checkpoint
from ml.constants import CLASS_NAMES


def model_card(path: str | Path) -> str:
    """The Markdown card of the classifier checkpoint at `path` (raises `CheckpointError`)."""
    model, checkpoint = load_classifier_checkpoint(path)
    config, data, metrics = checkpoint["config"], checkpoint.get("data") or {}, checkpoint.get("metrics") or {}
    parameters = sum(p.numel() for p in model.parameters())
    if config["architecture"] == BACKBONE_ARCHITECTURE:
        network = f"timm backbone `{config['backbone']}` with a 4-channel stem, global average pooling, dropout {config['dropout']}, a linear layer to 19 sigmoid outputs"
    else:
        widths = ", ".join(str(w) for w in config["widths"])
        network = f"compact CNN (`ml.classifier.network.CellClassifier`), widths {widths}, dropout {config['dropout']}"
    preprocessing = config.get("preprocessing", PREPROCESSING)
    lines = [
        f"# Model card: {checkpoint['name']}",
        "",
        checkpoint.get("summary") or "This card was written from the checkpoint alone; no summary was recorded.",
        "",
        "## What it is",
        "",
        "| | |",
        "| --- | --- |",
        "| task | multi-label classification of single cells into the 19 HPA classes |",
        f"| network | {network}; {parameters / 1e6:.2f} M parameters |",
        f"| input | one cell ({preprocessing['crop']}), {config['input_size_px']} x {config['input_size_px']} px, channels "
        f"{', '.join(preprocessing['channels'])} scaled to [0, 1], normalised with mean "
        f"{_numbers(config['mean'])} and std {_numbers(config['std'])} |",
        f"| output | per cell, `{config['blend_cell_weight']} * cell + {1 - config['blend_cell_weight']:.2g} * image`, "
        f"image = {config['image_pooling']} of the field's cells |",
        f"| segmentation it was trained with | {data.get('segmentation') or 'not recorded'} |",
        "",
        "## Data",
        "",
    ]
    if data:
        lines += [
            f"{data.get('fields', '?')} fields from `{data.get('source', '?')}` (fingerprint {data.get('fields_sha256_16', '?')}): "
            f"{data.get('training_fields', '?')} trained it ({data.get('training_cells', '?')} cells), "
            f"{data.get('validation_fields', '?')} validated it ({data.get('validation_cells', '?')} cells).",
            "",
            f"Cell labels: {data.get('cell_labels', 'not recorded')}.",
            "",
        ]
        counts = data.get("image_label_counts") or {}
        if counts:
            lines += ["| class | fields |", "| --- | ---: |"] + [
                f"| {name} | {count} |" for name, count in counts.items()
            ]
            lines.append("")
    else:
        lines += ["No description of the training data was recorded.", ""]
    lines += ["## Training", ""]
    if data.get("command"):
        lines += ["```sh", data["command"], "```", ""]
    facts = [
        ("epochs", data.get("epochs")),
        ("epochs run", data.get("epochs_run")),
        ("stopped early", data.get("stopped_early")),
        ("refinement rounds", data.get("refine_rounds")),
        ("refinement epochs", data.get("refine_epochs")),
        ("started from", data.get("init") or data.get("pretrained") or "random weights"),
        ("processes", data.get("processes")),
        ("device", data.get("device")),
        ("time", f"{data['training_time_s'] / 60:.1f} min" if "training_time_s" in data else None),
        ("seed", data.get("seed")),
    ]
    lines += ["| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in facts if v is not None] + [""]
    lines += ["## Validation", ""]
    keys = ("val_map", "val_cell_map", "val_image_map")
    summary = [(k, metrics[k]) for k in keys if isinstance(metrics.get(k), float)]
    if summary:
        names = {
            "val_map": "competition mAP (cells, IoU 0.6)",
            "val_cell_map": "cell-level macro AP of held-out annotated cells",
            "val_image_map": "image-level mAP",
        }
        lines += [f"- {names[k]}: {v:.4f}" for k, v in summary]
        started = [(k, metrics[f"start_{k}"]) for k in keys if isinstance(metrics.get(f"start_{k}"), float)]
        lines += [f"- the starting model on the same data, {names[k]}: {v:.4f}" for k, v in started]
        if metrics.get("kept_starting_model"):
            lines.append("- no epoch did better than the starting model, so this checkpoint keeps its weights")
        lines.append("")
        columns = [k for k in ("val_ap_per_class", "val_cell_ap_per_class", "val_image_ap_per_class") if metrics.get(k)]
        header = {
            "val_ap_per_class": "cell AP",
            "val_cell_ap_per_class": "annotated cell AP",
            "val_image_ap_per_class": "image AP",
        }
        lines += ["| class | " + " | ".join(header[c] for c in columns) + " |", "| --- |" + " ---: |" * len(columns)]
        for index, name in enumerate(CLASS_NAMES):
            values = [metrics[c][index] for c in columns]
            lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in values) + " |")
        lines.append("")
    else:
        lines += ["No validation metrics were recorded.", ""]
    if checkpoint.get("familiarity") is not None:
        familiarity = checkpoint["familiarity"]
        lines += [
            "## Familiarity",
            "",
            f"Cells are compared with {familiarity.training_cells} training cells in the layers "
            f"{', '.join(familiarity.layer_names)}; a cell beyond the {familiarity.percentile:g}th percentile is flagged unfamiliar.",
            "",
        ]
    return "\n".join(lines)


def _numbers(values) -> str:
    return "(" + ", ".join(f"{float(v):.3f}" for v in values) + ")"
