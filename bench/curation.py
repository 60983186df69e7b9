"""A biologist teaches the model through the REST API only, on a domain the shipped model has not seen.

The domain: fields of the `v2` synthetic generator (`ml.synth`, closer to real HPA images; `--style v1`: the
generator the shipped model was trained on) with
spectral bleed-through of the endoplasmic reticulum stain into the protein channel, a common widefield
artefact (a weak antibody imaged with a high gain next to a bright ER dye): green' = green + 3 * yellow.
A scripted user, through `/api/` alone (token, uploads, cells,
annotations, training jobs, re-runs, exports):
1. uploads held-out fields with the shipped model (or with `--start-model CKPT`, a checkpoint it
   imports into the registry first) and scores their Kaggle submission (the competition mAP against
   the generator's true cells): the starting mAP;
2. uploads other fields, annotates at most `--max-cells` cells with their true classes (cells
   matched to the generator's truth at IoU >= 0.5, spread over the classes), starts a training job
   fine-tuning the starting model from those cells, waits for it;
3. runs the held-out fields again with the new model and scores them again;
4. uploads `--weak-fields` fields with their `train.csv` in the zip (image-level labels only) and
   trains from them weakly (refinement rounds as `ml train`), and scores that model too.

The other fields are the first ones drawn after the held-out ones, so they may show other classes
(other proteins); with `--same-stainings POOL` they are chosen among POOL fields to show the held-out
fields' classes between them, as a lab that annotates fields of the stainings it will image again.

Celery tasks run in this process (eagerly), so the timings are those of the work itself.

    .venv/bin/python -m bench.curation [--heldout 8 --train-fields 12 --max-cells 200 --weak-fields 20 --epochs 50]
                                       [--size 1024 --bleed 3 --bleed-from yellow --downscale 1 --style v2]
                                       [--start-model CKPT] [--same-stainings POOL]
"""

import argparse
import csv
import io
import shutil
import tempfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import DEFAULT_DATA_DIR, block_means, configure_django, markdown_table

CHANNEL_FILES = ("red", "green", "blue", "yellow")

BLEED_THROUGH = 3.0  # of the ER (yellow) channel into the protein (green) one
PASSWORD = "a-scripted-biologist"


# The channel that bleeds into the protein one, by what it stains.
STAINS = {"yellow": "ER", "blue": "DAPI", "red": "microtubule"}


def domain_name(bleed: float = BLEED_THROUGH, downscale: int = 1, style: str = "v2", source: str = "yellow") -> str:
    name = f"synthetic {style} fields"
    name += (
        f" with {STAINS[source]} bleed-through into the protein channel (green' = green + {bleed:g} * {source})"
        if bleed
        else " as drawn"
    )
    if downscale > 1:
        name += (
            f", drawn {downscale} times larger and averaged down {downscale} times (as the 2018 competition's fields)"
        )
    return name


def bleed_through(green: np.ndarray, other: np.ndarray, bleed: float = BLEED_THROUGH) -> np.ndarray:
    """The domain's protein channel: the protein plus `bleed` times another channel (uint8 in and out)."""
    mixed = green.astype(np.float32) + bleed * other.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def _solution_averaged_down(source: Path, target: Path, factor: int) -> None:
    """The solution CSV of fields averaged down `factor` times: each true mask averaged alike, kept where >= 0.5."""
    from ml.encoding import (
        SubmissionRow,
        decode_kaggle_mask,
        encode_kaggle_mask,
        parse_prediction_string,
        read_submission,
        write_submission,
    )

    rows = []
    for row in read_submission(source):
        parts = []
        for label, confidence, mask in parse_prediction_string(row.prediction_string):
            true_mask = decode_kaggle_mask(mask, height=row.height, width=row.width)
            parts.append(f"{label} {confidence:g} {encode_kaggle_mask(block_means(true_mask, factor) >= 0.5)}")
        rows.append(
            SubmissionRow(
                image_id=row.image_id,
                width=row.width // factor,
                height=row.height // factor,
                prediction_string=" ".join(parts),
            )  # fmt: skip
        )
    write_submission(target, rows)


def domain_fields(
    folder: Path,
    *,
    count: int,
    seed: int,
    size_px: int,
    bleed: float = BLEED_THROUGH,
    downscale: int = 1,
    style: str = "v2",
    source: str = "yellow",
) -> Path:
    """`count` fields of the domain (drawn by the generator's `style`) in Kaggle layout (with train.csv, solution.csv), drawn once at
    `size_px * downscale` px (the generator's own fields are kept beside it, in `{folder}-raw`), the
    `source` channel (the ER's, yellow) bled into the protein one, then averaged down `downscale` times to `size_px`."""
    from ml.synth import write_dataset

    if (folder / "solution.csv").is_file() and len(list(folder.glob("*_green.png"))) >= count:
        return folder
    drawn_px = size_px * downscale
    raw = folder.with_name(f"curation-{style}-{drawn_px}px-s{seed}-raw")
    if not ((raw / "solution.csv").is_file() and len(list(raw.glob("*_green.png"))) >= count):
        shutil.rmtree(raw, ignore_errors=True)
        write_dataset(raw, n_images=count, seed=seed, size_px=drawn_px, bit_depth=8, style=style)
    shutil.rmtree(folder, ignore_errors=True)
    if downscale == 1:
        shutil.copytree(raw, folder)
    else:  # the true label images would not match the fields: only the CSVs come along
        folder.mkdir(parents=True)
        shutil.copy(raw / "train.csv", folder / "train.csv")
        _solution_averaged_down(raw / "solution.csv", folder / "solution.csv", downscale)
    for path in raw.glob("*_green.png"):
        image_id = path.name.removesuffix("_green.png")
        planes = {channel: np.asarray(Image.open(raw / f"{image_id}_{channel}.png")) for channel in CHANNEL_FILES}
        planes["green"] = bleed_through(planes["green"], planes[source], bleed)
        changed = planes if downscale > 1 else {"green": planes["green"]}  # as drawn, the rest is the copy's
        for channel, plane in changed.items():
            if downscale > 1:
                plane = np.clip(np.round(block_means(plane, downscale)), 0, 255).astype(np.uint8)
            Image.fromarray(plane).save(folder / f"{image_id}_{channel}.png")
    return folder


def _image_labels(folder: Path) -> dict[str, str]:
    with open(folder / "train.csv", newline="") as handle:
        return {row["ID"]: row["Label"] for row in csv.DictReader(handle)}


def _zip(folder: Path, ids: list[str], *, with_labels: bool) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for image_id in ids:
            for channel in CHANNEL_FILES:
                archive.write(folder / f"{image_id}_{channel}.png", f"{image_id}_{channel}.png")
        if with_labels:
            rows = _image_labels(folder)
            archive.writestr("train.csv", "ID,Label\n" + "".join(f"{i},{rows[i]}\n" for i in ids))
    return buffer.getvalue()


class Biologist:
    """The scripted user: every step an HTTP call to the REST API (Django's test client, in process)."""

    def __init__(self, client) -> None:
        self.client = client

    def call(self, method: str, path: str, expect: int = 200, **kwargs):
        response = getattr(self.client, method)(path, **kwargs)
        if response.status_code != expect:
            body = getattr(response, "content", b"")[:500]
            raise RuntimeError(f"{method.upper()} {path} answered {response.status_code}: {body!r}")
        return response

    def upload(self, name: str, archive: bytes, classifier: int) -> dict:
        from django.core.files.uploadedfile import SimpleUploadedFile

        files = [SimpleUploadedFile(f"{name}.zip", archive, content_type="application/zip")]
        job = self.call(
            "post", "/api/jobs/", 201, data={"name": name, "files": files, "classifier": classifier}, format="multipart"
        ).json()
        return self.wait_job(job["id"])

    def import_model(self, path: Path) -> dict:
        """A classifier checkpoint imported into the registry as the user's own (POST /api/models/)."""
        from django.core.files.uploadedfile import SimpleUploadedFile

        upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/octet-stream")
        return self.call("post", "/api/models/", 201, data={"file": upload}, format="multipart").json()

    def wait_job(self, job_id: int) -> dict:
        while (job := self.call("get", f"/api/jobs/{job_id}/").json())["status"] in ("queued", "running"):
            time.sleep(1)
        if job["status"] != "done":
            raise RuntimeError(f"Job {job_id} ended {job['status']}: {[f['error'] for f in job['fields']]}")
        return job

    def cells(self, job_id: int) -> list[dict]:
        cells, url = [], f"/api/jobs/{job_id}/cells/?page_size=500"
        while url:
            page = self.call("get", url).json()
            cells += page["results"]
            url = page["next"]
        return cells

    def submission_map(self, job_id: int, solution_path: Path) -> float:
        return self.submission_scores(job_id, solution_path).mAP

    def submission_scores(self, job_id: int, solution_path: Path):
        from ml.encoding import read_submission
        from ml.evaluate import score

        body = b"".join(self.call("get", f"/api/jobs/{job_id}/submission.csv").streaming_content).decode()
        submitted = {row.image_id: row for row in read_submission(io.StringIO(body))}
        solution = [row for row in read_submission(solution_path) if row.image_id in submitted]
        return score(solution, [submitted[row.image_id] for row in solution])

    def train(self, **request) -> tuple[dict, float]:
        started = time.perf_counter()
        job = self.call("post", "/api/training-jobs/", 201, data=request, format="json").json()
        while (job := self.call("get", f"/api/training-jobs/{job['id']}/").json())["status"] in ("queued", "running"):
            time.sleep(1)
        if job["status"] != "done":
            raise RuntimeError(f"Training job {job['id']} ended {job['status']}: {job['error']}")
        return job, time.perf_counter() - started

    def rerun(self, job_id: int, classifier: int) -> None:
        self.call("post", f"/api/jobs/{job_id}/classify/", 202, data={"classifier": classifier}, format="json")
        self.wait_job(job_id)


def true_classes(cells: list[dict], folder: Path) -> dict[int, list[int]]:
    """cell id -> the true classes of the generator's cell it overlaps at IoU >= 0.5 (unmatched cells left out)."""
    from ml.encoding import decode_rle, kaggle_to_rle, parse_prediction_string, read_submission

    solution = {row.image_id: row for row in read_submission(folder / "solution.csv")}
    found = {}
    by_field = defaultdict(list)
    for cell in cells:
        by_field[cell["field"]].append(cell)
    for field_name, field_cells in by_field.items():
        row = solution[field_name]
        truth: dict[str, set[int]] = defaultdict(set)
        for label, _confidence, mask in parse_prediction_string(row.prediction_string):
            truth[mask].add(label)
        true_masks = [(decode_rle(kaggle_to_rle(m, height=row.height, width=row.width)), c) for m, c in truth.items()]
        for cell in field_cells:
            mask = decode_rle(cell["mask_rle"])
            for true_mask, classes in true_masks:
                union = np.logical_or(mask, true_mask).sum()
                if union and np.logical_and(mask, true_mask).sum() / union >= 0.5:
                    found[cell["id"]] = sorted(classes)
                    break
    return found


def choose_cells(truth: dict[int, list[int]], *, limit: int, seed: int) -> dict[int, list[int]]:
    """At most `limit` cells, taken round-robin over their classes so rare ones are represented."""
    rng = np.random.default_rng(seed)
    by_class = defaultdict(list)
    for cell_id, classes in truth.items():
        by_class[min(classes)].append(cell_id)
    queues = {label: list(rng.permutation(ids)) for label, ids in sorted(by_class.items())}
    chosen: dict[int, list[int]] = {}
    while len(chosen) < limit and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < limit:
                cell_id = int(queue.pop())
                chosen[cell_id] = truth[cell_id]
    return chosen


def fields_showing(labels: dict[str, str], classes: set[int], pool: list[str], count: int) -> list[str]:
    """`count` fields of `pool` (in its order) that between them show every one of `classes` that any
    pool field shows, each picked for the most classes not yet shown, ties to the earlier field; the rest
    from the start of the pool. `labels`: field id -> its image labels ("0|5")."""
    shows = {field: classes_shown(labels, [field]) & classes for field in pool}
    chosen: list[str] = []
    missing = set().union(*shows.values()) if shows else set()
    while missing and len(chosen) < count:
        best = max((field for field in pool if field not in chosen), key=lambda field: len(shows[field] & missing))
        chosen.append(best)
        missing -= shows[best]
    return chosen + [field for field in pool if field not in chosen][: count - len(chosen)]


def classes_shown(labels: dict[str, str], ids: list[str]) -> set[int]:
    """The classes the image labels of fields `ids` name between them."""
    return {int(label) for field in ids for label in labels[field].split("|")}


def _unshown(labels: dict[str, str], heldout_ids: list[str], training_ids: list[str]) -> list[int]:
    """The held-out fields' classes that none of the training fields shows."""
    return sorted(classes_shown(labels, heldout_ids) - classes_shown(labels, training_ids))


def run(
    *,
    heldout: int,
    train_fields: int,
    max_cells: int,
    weak_fields: int,
    epochs: int,
    weak_epochs: int,
    seed: int,
    size_px: int,
    bleed: float = BLEED_THROUGH,
    downscale: int = 1,
    style: str = "v2",
    source: str = "yellow",
    start_model: Path | None = None,
    same_stainings: int = 0,
) -> dict:
    """Every step of the module's docstring; Celery tasks run in this process while it lasts."""
    from django.conf import settings

    from hpaweb.celery import app

    eager, hosts, private = app.conf.task_always_eager, settings.ALLOWED_HOSTS, settings.HPAWEB_PRIVATE_MODELS
    app.conf.task_always_eager = True
    settings.ALLOWED_HOSTS = [*hosts, "testserver"]  # the test client's host name
    settings.HPAWEB_PRIVATE_MODELS = True  # an installation where users import their own models (--start-model)
    try:
        return _run(
            heldout=heldout, train_fields=train_fields, max_cells=max_cells, weak_fields=weak_fields, epochs=epochs,
            weak_epochs=weak_epochs, seed=seed, size_px=size_px, bleed=bleed, downscale=downscale, style=style,
            source=source, start_model=start_model, same_stainings=same_stainings,
        )  # fmt: skip
    finally:
        app.conf.task_always_eager, settings.ALLOWED_HOSTS, settings.HPAWEB_PRIVATE_MODELS = eager, hosts, private


def _run(
    *,
    heldout: int,
    train_fields: int,
    max_cells: int,
    weak_fields: int,
    epochs: int,
    weak_epochs: int,
    seed: int,
    size_px: int,
    bleed: float,
    downscale: int,
    style: str,
    source: str,
    start_model: Path | None,
    same_stainings: int,
) -> dict:
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    scale = f"-down{downscale}" if downscale > 1 else ""
    folder = domain_fields(
        DEFAULT_DATA_DIR / f"curation-{style}-{STAINS[source].lower()}-bleed{bleed:g}{scale}-{size_px}px-s{seed}",
        count=heldout + max(train_fields, weak_fields, same_stainings),
        seed=seed,
        size_px=size_px,
        bleed=bleed,
        downscale=downscale,
        style=style,
        source=source,
    )
    labels = _image_labels(folder)
    ids = sorted(labels)
    heldout_ids, pool = ids[:heldout], ids[heldout:]
    annotated_ids, weak_ids = pool[:train_fields], pool[:weak_fields]
    if same_stainings:  # the lab's own stainings: fields of the pool that show the held-out fields' classes
        shown = classes_shown(labels, heldout_ids)
        pool = pool[:same_stainings]
        annotated_ids = fields_showing(labels, shown, pool, train_fields)
        weak_ids = fields_showing(labels, shown, pool, weak_fields)

    get_user_model().objects.create_user(username="biologist", password=PASSWORD)
    client = APIClient()
    token = client.post("/api/token/", {"username": "biologist", "password": PASSWORD}).json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    user = Biologist(client)
    if start_model is None:
        starting = next(m for m in user.call("get", "/api/models/").json()["results"] if m["is_default"])
    else:
        starting = user.import_model(start_model)

    test_job = user.upload("held-out", _zip(folder, heldout_ids, with_labels=False), starting["id"])
    start = user.submission_scores(test_job["id"], folder / "solution.csv")
    start_map = start.mAP

    train_job = user.upload("to annotate", _zip(folder, annotated_ids, with_labels=False), starting["id"])
    chosen = choose_cells(true_classes(user.cells(train_job["id"]), folder), limit=max_cells, seed=seed)
    groups = defaultdict(list)
    for cell_id, classes in chosen.items():
        groups[tuple(classes)].append({"id": cell_id})
    for classes, cells in groups.items():
        user.call(
            "post",
            f"/api/jobs/{train_job['id']}/annotations/",
            201,
            data={"cells": cells, "classes": list(classes)},
            format="json",
        )
    annotated, cells_time = user.train(
        jobs=[train_job["id"]], source="cells", base_model=starting["id"], epochs=epochs, name="From my cells"
    )
    user.rerun(test_job["id"], annotated["result_model"]["id"])
    cells_scores = user.submission_scores(test_job["id"], folder / "solution.csv")
    cells_map = cells_scores.mAP

    weak_job = user.upload("labelled", _zip(folder, weak_ids, with_labels=True), starting["id"])
    weak, weak_time = user.train(
        jobs=[weak_job["id"]],
        source="jobs",
        base_model=starting["id"],
        epochs=weak_epochs,
        refine_rounds=1,
        name="Weak",
    )
    user.rerun(test_job["id"], weak["result_model"]["id"])
    weak_scores = user.submission_scores(test_job["id"], folder / "solution.csv")
    weak_map = weak_scores.mAP
    return {
        "domain": domain_name(bleed, downscale, style, source),
        "start_model": starting["name"],
        "heldout_fields": heldout,
        "annotated_cells": len(chosen),
        "annotated_fields": train_fields,
        "weak_fields": weak_fields,
        "classes_unshown": _unshown(labels, heldout_ids, annotated_ids),
        "epochs": epochs,
        "weak_epochs": weak_epochs,
        "start_map": start_map,
        "cells_map": cells_map,
        "cells_training_s": cells_time,
        "weak_map": weak_map,
        "weak_training_s": weak_time,
        "per_class_ap": {
            "start": list(start.per_class_ap),
            "cells": list(cells_scores.per_class_ap),
            "weak": list(weak_scores.per_class_ap),
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.curation", description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--train-fields", type=int, default=12)
    parser.add_argument("--max-cells", type=int, default=200)
    parser.add_argument("--weak-fields", type=int, default=20)
    parser.add_argument(
        "--epochs", type=int, default=50, help="of the training from annotated cells (few cells; at most 50)"
    )
    parser.add_argument("--weak-epochs", type=int, default=6, help="of the weak training (then one refinement round)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=7301)
    parser.add_argument(
        "--bleed", type=float, default=BLEED_THROUGH, help="times the --bleed-from channel added to the protein one"
    )
    parser.add_argument(
        "--downscale", type=int, default=1,
        help="draw the fields this many times larger and average them down to --size (1: as drawn)",
    )  # fmt: skip
    parser.add_argument("--style", choices=("v1", "v2"), default="v2", help="of the synthetic generator")
    parser.add_argument(
        "--bleed-from", choices=tuple(STAINS), default="yellow", help="the channel that bleeds into the protein one"
    )
    parser.add_argument(
        "--start-model",
        type=Path,
        help="a classifier checkpoint to start from (imported first); default: the shipped one",
    )
    parser.add_argument(
        "--same-stainings", type=int, default=0, metavar="POOL",
        help="annotate and label fields (of POOL drawn beside the held-out ones) that show the held-out fields' "
        "classes, as a lab that annotates its own stainings (0: the first fields after the held-out ones)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.downscale < 1 or args.bleed < 0:
        raise SystemExit("--downscale must be at least 1 and --bleed at least 0.")
    if args.start_model is not None and not args.start_model.is_file():
        raise SystemExit(f"--start-model {args.start_model}: no such file.")
    import torch

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="hpaweb-bench-curation-"))
    try:
        configure_django(work)
        result = run(
            heldout=args.heldout, train_fields=args.train_fields, max_cells=args.max_cells,
            weak_fields=args.weak_fields, epochs=args.epochs, weak_epochs=args.weak_epochs, seed=args.seed,
            size_px=args.size, bleed=args.bleed, downscale=args.downscale, style=args.style,
            source=args.bleed_from, start_model=args.start_model, same_stainings=args.same_stainings,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Domain: {result['domain']}; {result['heldout_fields']} held-out {args.size} px fields.")
    if args.same_stainings:
        print(
            f"Annotated and labelled fields chosen from {args.same_stainings} to show the held-out fields' classes; "
            f"held-out classes none of them shows: {result['classes_unshown'] or 'none'}."
        )
    print(
        markdown_table(
            ["model", "trained from", "held-out mAP", "change", "training time (2 CPU threads)"],
            [
                [f"starting model ({result['start_model']})", "", f"{result['start_map']:.4f}", "", ""],
                [
                    "fine-tuned from annotated cells",
                    f"{result['annotated_cells']} cells of {result['annotated_fields']} fields",
                    f"{result['cells_map']:.4f}",
                    f"{result['cells_map'] - result['start_map']:+.4f}",
                    f"{result['cells_training_s']:.0f} s",
                ],
                [
                    "fine-tuned weakly from labelled fields",
                    f"{result['weak_fields']} fields' image labels",
                    f"{result['weak_map']:.4f}",
                    f"{result['weak_map'] - result['start_map']:+.4f}",
                    f"{result['weak_training_s']:.0f} s",
                ],
            ],
            align="llrrr",
        )
    )
    from ml.constants import CLASS_NAMES

    aps = result["per_class_ap"]
    shown = [i for i, ap in enumerate(aps["start"]) if ap is not None]
    print("\nPer-class AP on the held-out fields (classes they hold):")
    print(
        markdown_table(
            ["class", "starting model", "annotated cells", "weak"],
            [[CLASS_NAMES[i], *(f"{aps[k][i]:.3f}" for k in ("start", "cells", "weak"))] for i in shown],
            align="lrrr",
        )
    )
    return result


if __name__ == "__main__":
    main()
