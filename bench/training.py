"""Training at scale: preparation speed, training throughput, resident memory, one DDP process against two.

    .venv/bin/python -m bench.training [--fields 12] [--size 64] [--archs compact efficientnet_lite0]
        [--rss-fields 500 5000] [--samples 1024] [--skip prepare throughput memory ddp]

Prints markdown tables:
1. preparation (`ml.training.prepare`, classical segmentation) of `--fields` synthetic 512 px fields
   with 1 and 2 jobs, in fields/s (wall time, process start-up included);
2. training throughput in cells/s per process (`python -m ml train --store`, the second epoch of
   `--samples` cells, batch 64, no validation) for each architecture, on the CPU and on CUDA
   where present;
3. peak resident memory of a whole `python -m ml train` process (preparing nothing, training one
   epoch of `--samples` cells, validating 2 % of the fields, describing the familiarity) on a store
   of 500 and of 5,000 fields. Those stores are written with `CellStore.add_cropped` from the crops
   of the prepared synthetic 512 px fields, repeated (field i takes the cells of prepared field
   i mod n and its labels), so they hold as many cells per field as real synthetic fields without
   segmenting thousands of them;
4. one DDP process against two (`torchrun --nproc-per-node N`, gloo, 1 thread each): cells/s of
   the second epoch over all processes;
5. with `--compare`: compact, efficientnet_lite0 from scratch and efficientnet_lite0 from ImageNet,
   each trained by `python -m ml train --data` on the `--fields` synthetic fields (`--compare-epochs`,
   no refinement), scored on `--held-out` synthetic 512 px fields of another seed (competition mAP of
   the whole pipeline, classical segmentation) and on the real fields of ../shared/data/real/hpa-4ch
   (the rank of each true label among the 19 image-level scores; 1 = first).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import REPO_ROOT, SHARED_DIR, synthetic_fields
from ml.training.prepare import SegmenterSpec, prepare_store
from ml.training.store import CellStore

FIELD_SIZE_PX = 512


def prepared_data(count: int) -> Path:
    """The folder of `count` synthetic 512 px fields (drawn once into var/bench) with its train.csv."""
    fields = synthetic_fields(count=count, size_px=FIELD_SIZE_PX)
    return Path(fields[0]["green"]).parent


def bench_prepare(data: Path, count: int, size_px: int, work: Path) -> list[dict]:
    rows = []
    for jobs in (1, 2):
        started = time.perf_counter()
        report = prepare_store(
            data, work / f"prepare-{jobs}", size_px=size_px, segmenter=SegmenterSpec("classical"), jobs=jobs,
            max_fields=count,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        rows.append({"jobs": jobs, "fields": report.prepared, "cells": report.cells, "seconds": seconds})
    return rows


def train_command(store: Path, out: Path, *, size_px: int, arch: str, samples: int, epochs: int, extra=()) -> list[str]:
    return [
        "train", "--store", str(store), "--out", str(out), "--size", str(size_px), "--arch", arch,
        "--epochs", str(epochs), "--refine-rounds", "0", "--samples-per-epoch", str(samples), "--batch-size", "64",
        *extra,
    ]  # fmt: skip


def epoch_rates(log: Path) -> list[float]:
    return [e["cells_per_s"] for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "epoch"]


def run_ml(argv: list[str], *, env_threads: int = 2, measure_rss: bool = False) -> float | None:
    """Run `python -m ml ARGV` in a fresh process; its peak resident memory in MiB when asked."""
    code = (
        "import resource, runpy, sys\n"
        f"sys.argv = ['ml', *{argv!r}]\n"
        "try:\n    runpy.run_module('ml', run_name='__main__')\nexcept SystemExit as end:\n"
        "    assert not end.code, end.code\n"
        "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(env_threads)}
    finished = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(finished.stderr[-3000:])
    if measure_rss:
        line = next(line for line in finished.stdout.splitlines() if line.startswith("PEAK_RSS_KIB"))
        return int(line.split()[1]) / 1024
    return None


def bench_throughput(store: Path, size_px: int, archs: list[str], samples: int, work: Path) -> list[dict]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for arch in archs:
            out = work / f"throughput-{arch}-{device}.pt"
            extra = ["--device", device, "--threads", "2", "--val-fraction", "0"]
            run_ml(train_command(store, out, size_px=size_px, arch=arch, samples=samples, epochs=2, extra=extra))
            rates = epoch_rates(out.with_suffix(".run") / "log.jsonl")
            rows.append({"arch": arch, "device": device, "cells_per_s": rates[-1]})
    return rows


def repeated_store(source: CellStore, path: Path, fields: int) -> int:
    """A store of `fields` fields repeating the source's fields (crops and labels); returns its cells."""
    store = CellStore.create(path, size_px=source.size_px)
    prepared = [source.read_field(i) for i in source.field_ids()]
    for index in range(fields):
        model = prepared[index % len(prepared)]
        store.add_cropped(f"r{index:05d}", model.crops, image_labels=model.image_labels)
    return store.cell_count()


def bench_memory(source: CellStore, counts: list[int], samples: int, work: Path) -> list[dict]:
    rows = []
    for count in counts:
        path = work / f"memory-{count}"
        started = time.perf_counter()
        cells = repeated_store(source, path, count)
        written = time.perf_counter() - started
        out = work / f"memory-{count}.pt"
        extra = ["--device", "cpu", "--threads", "2", "--val-fraction", "0.02"]
        command = train_command(
            path, out, size_px=source.size_px, arch="compact", samples=samples, epochs=1, extra=extra
        )
        peak = run_ml(command, measure_rss=True)
        rows.append({"fields": count, "cells": cells, "peak_rss_mib": peak, "store_written_s": written})
    return rows


def bench_ddp(store: Path, size_px: int, samples: int, work: Path) -> list[dict]:
    rows = []
    for processes in (1, 2):
        out = work / f"ddp-{processes}.pt"
        argv = train_command(store, out, size_px=size_px, arch="compact", samples=samples, epochs=2)
        argv += ["--device", "cpu", "--threads", "1", "--val-fraction", "0"]
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        finished = subprocess.run([*command, "-m", "ml", *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if finished.returncode != 0:
            raise RuntimeError(finished.stderr[-3000:])
        rows.append({"processes": processes, "cells_per_s": epoch_rates(out.with_suffix(".run") / "log.jsonl")[-1]})
    return rows


REAL_FIELDS_DIR = SHARED_DIR / "data" / "real" / "hpa-4ch"
HELD_OUT_SEED = 4099
COMPARED = (("compact", None), ("efficientnet_lite0", None), ("efficientnet_lite0", "imagenet"))


def held_out_scores(model: Path, held_out: Path) -> tuple[float, dict[str, list[int]]]:
    """(competition mAP on the held-out synthetic fields, {real field: ranks of its true labels})."""
    from ml.classifier.predictor import Predictor
    from ml.encoding import SubmissionRow, prediction_string, read_submission, rle_to_kaggle
    from ml.evaluate import score
    from ml.io import find_fields, read_field
    from ml.pipeline import analyse_field
    from ml.segmentation import Segmenter
    from ml.training.data import read_image_labels

    predictor = Predictor.from_checkpoint(model, device="cpu")
    segmenter = Segmenter("classical")
    solution = {row.image_id: row for row in read_submission(held_out / "solution.csv")}
    rows = []
    for image_id, paths in find_fields(held_out).items():
        result = analyse_field(read_field(paths), segmenter=segmenter, predictor=predictor)
        triples = [(rle_to_kaggle(cell.mask_rle), np.asarray(cell.probabilities)) for cell in result.cells]
        rows.append(SubmissionRow(image_id, result.width, result.height, prediction_string(triples)))
    synthetic_map = score([solution[row.image_id] for row in rows], rows).mAP
    ranks = {}
    labels = read_image_labels(REAL_FIELDS_DIR / "train.csv")
    for image_id, paths in find_fields(REAL_FIELDS_DIR).items():
        result = analyse_field(read_field(paths), segmenter=segmenter, predictor=predictor)
        order = list(np.argsort(-np.asarray(result.image_probabilities), kind="stable"))
        ranks[image_id] = [order.index(label) + 1 for label in labels[image_id]]
    return synthetic_map, ranks


def bench_compare(data: Path, fields: int, held_out_count: int, size_px: int, epochs: int, work: Path) -> list[dict]:
    held_out = Path(
        synthetic_fields(count=held_out_count, size_px=FIELD_SIZE_PX, seed=HELD_OUT_SEED)[0]["green"]
    ).parent
    rows = []
    for arch, pretrained in COMPARED:
        out = work / f"compare-{arch}-{pretrained or 'scratch'}.pt"
        argv = ["train", "--data", str(data), "--cache-dir", str(work / "compare-cache"), "--out", str(out),
                "--size", str(size_px), "--arch", arch, "--epochs", str(epochs), "--refine-rounds", "0",
                "--max-fields", str(fields), "--device", "cpu", "--threads", "2", "--seed", "0"]  # fmt: skip
        if pretrained:
            argv += ["--pretrained", pretrained]
        started = time.perf_counter()
        run_ml(argv)
        seconds = time.perf_counter() - started
        synthetic_map, ranks = held_out_scores(out, held_out)
        rows.append(
            {"arch": arch, "start": pretrained or "scratch", "map": synthetic_map, "ranks": ranks, "s": seconds}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=12, help="synthetic 512 px fields to prepare")
    parser.add_argument("--size", type=int, default=64, help="crop side in px")
    parser.add_argument("--archs", nargs="+", default=["compact", "efficientnet_lite0"])
    parser.add_argument("--rss-fields", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--samples", type=int, default=1024, help="cells per training epoch")
    parser.add_argument("--skip", nargs="*", default=[], choices=["prepare", "throughput", "memory", "ddp"])
    parser.add_argument("--compare", action="store_true", help="also compare compact and EfficientNet-Lite0 starts")
    parser.add_argument("--compare-epochs", type=int, default=3)
    parser.add_argument("--held-out", type=int, default=8, help="held-out synthetic 512 px fields")
    args = parser.parse_args(argv)
    data = prepared_data(args.fields)
    with tempfile.TemporaryDirectory(prefix="bench-training-", dir=REPO_ROOT / "var") as folder:
        work = Path(folder)
        source_path = work / "source"
        prepare_store(
            data, source_path, size_px=args.size, segmenter=SegmenterSpec("classical"), max_fields=args.fields
        )
        source = CellStore.open(source_path)
        print(
            f"\n{args.fields} synthetic {FIELD_SIZE_PX} px fields, {source.cell_count()} cells, crops of {args.size} px; "
            f"torch {torch.__version__}, {os.cpu_count()} CPU(s)\n"
        )
        if "prepare" not in args.skip:
            print("| preparation | fields | cells | seconds | fields/s |\n| --- | ---: | ---: | ---: | ---: |")
            for row in bench_prepare(data, args.fields, args.size, work):
                rate = row["fields"] / row["seconds"]
                print(
                    f"| {row['jobs']} job(s) | {row['fields']} | {row['cells']} | {row['seconds']:.1f} | {rate:.2f} |"
                )
            print()
        if "throughput" not in args.skip:
            print("| training | device | cells/s per process |\n| --- | --- | ---: |")
            for row in bench_throughput(source_path, args.size, args.archs, args.samples, work):
                print(f"| {row['arch']} | {row['device']} | {row['cells_per_s']:.0f} |")
            print()
        if "memory" not in args.skip:
            print(
                "| store | cells | peak resident memory of training | store written in |\n| ---: | ---: | ---: | ---: |"
            )
            rows = bench_memory(source, args.rss_fields, args.samples, work)
            for row in rows:
                print(
                    f"| {row['fields']} fields | {row['cells']} | {row['peak_rss_mib']:.0f} MiB | "
                    f"{row['store_written_s']:.0f} s |"
                )
            if len(rows) >= 2:
                growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] - 1
                print(f"\n{rows[-1]['fields']} fields against {rows[0]['fields']}: {growth:+.1%} resident memory")
            print()
        if "ddp" not in args.skip:
            print("| DDP (gloo, CPU, 1 thread each) | cells/s, all processes |\n| --- | ---: |")
            for row in bench_ddp(source_path, args.size, args.samples, work):
                print(f"| {row['processes']} process(es) | {row['cells_per_s']:.0f} |")
            print()
        if args.compare:
            rows = bench_compare(data, args.fields, args.held_out, args.size, args.compare_epochs, work)
            real = list(rows[0]["ranks"])
            print(
                "| model | start | held-out synthetic mAP | "
                + " | ".join(f"{i[:8]} ranks" for i in real)
                + " | training s |\n| --- | --- | ---: |"
                + " --- |" * len(real)
                + " ---: |"
            )
            for row in rows:
                ranks = " | ".join(str(row["ranks"][i]) for i in real)
                print(f"| {row['arch']} | {row['start']} | {row['map']:.4f} | {ranks} | {row['s']:.0f} |")
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
