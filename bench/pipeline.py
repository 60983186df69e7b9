"""`python -m bench.pipeline` (also `python -m bench`, `make bench`): time the pipeline on synthetic fields and print markdown tables.

    python -m bench [--fields 8] [--size 2048] [--model CKPT] [--threads N] [--processes P]
                    [--system [--system-fields N]] [--memory [--memory-fields 50]] [--no-stages]

The stage table always runs (unless --no-stages); --system adds fields per minute through the
API with 1 and 2 worker processes on Redis and PostgreSQL (skipped, with the reason, when Redis
is unreachable); --memory adds a worker's resident memory over consecutive 3072 px fields.
Results are merged into bench/results/<date>-<host>.json with the machine's description.
Timings on a shared machine are noisy: the load average is recorded with every run.
"""

import argparse
import datetime
import shlex
import sys
import tempfile
from pathlib import Path

from bench.common import (
    DEFAULT_DATA_DIR,
    DEFAULT_SEED,
    RESULTS_DIR,
    configure_django,
    machine_description,
    markdown_table,
    results_path,
    synthetic_fields,
    write_results,
)

TARGET_FLOOR_RATIO = 5.0  # end to end per field with measurements and QC, at most this many times the decode floor
TARGET_CPU_CELLS_PER_S = 200.0
TARGET_GPU_FIELDS_PER_S = 20.0
TARGET_GPU_CELLS_PER_S = 20_000.0
NO_GPU = "not measured: no GPU"


def build_parser() -> argparse.ArgumentParser:
    from ml.constants import DEFAULT_MODEL_PATH

    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=8, help="synthetic fields timed stage by stage")
    parser.add_argument("--size", type=int, default=2048, help="side of each synthetic field in px")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the synthetic fields")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="classifier checkpoint")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--no-measure", action="store_true", help="leave out per-cell measurements and QC (the worker makes them)"
    )
    parser.add_argument(
        "--processes", type=int, default=None,
        help="processes of the parallel analysis (default: usable CPUs; 0 skips it)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-cells", type=int, default=256, help="crops per classifier batch in the parallel analysis"
    )
    parser.add_argument("--no-stages", action="store_true", help="skip the stage table (with --system or --memory)")
    parser.add_argument(
        "--system", action="store_true", help="also measure fields per minute through the API, 1 and 2 workers"
    )
    parser.add_argument("--system-fields", type=int, default=8, help="fields submitted per worker count")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/0", help="Redis broker for --system")
    parser.add_argument(
        "--postgres-url", default="postgres://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server for --system (a throwaway database is created there; SQLite when unreachable)",
    )  # fmt: skip
    parser.add_argument("--memory", action="store_true", help="also measure a worker's memory on 3072 px fields")
    parser.add_argument("--memory-fields", type=int, default=50, help="consecutive fields for --memory")
    parser.add_argument("--memory-size", type=int, default=3072, help="field side for --memory in px")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="where synthetic fields are kept")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the results JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.fields < 1 or args.size < 128:
        raise SystemExit("--fields must be at least 1 and --size at least 128 px.")
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    machine = machine_description()
    command = "python -m bench " + shlex.join(argv)
    print(f"# hpaweb benchmark, {machine['host']}: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, "
          f"{machine['torch_threads']} torch threads, GPU: {machine['gpu'] or 'none'}")  # fmt: skip
    print(f"Load average at start {machine['load_average_1_5_15']}: on a shared machine these timings are noisy.\n")

    sections: dict = {}
    with tempfile.TemporaryDirectory(prefix="hpaweb-bench-") as var_dir:
        if not args.no_stages:
            sections["stages"] = _run_stages(args, var_dir=Path(var_dir), command=command)
        if args.system:
            from bench import system

            fields = synthetic_fields(count=args.system_fields, size_px=args.size, seed=args.seed, data_dir=args.data)
            sections["system"] = system.run(
                fields, broker_url=args.broker_url, postgres_url=args.postgres_url, command=command
            )
            print(system.report(sections["system"]))
        if args.memory:
            from bench import memory

            fields = synthetic_fields(count=2, size_px=args.memory_size, seed=args.seed, data_dir=args.data)
            sections["memory"] = memory.run(
                fields, count=args.memory_fields, var_dir=Path(var_dir) / "memory", command=command
            )
            print(memory.report(sections["memory"]))

    machine["load_average_at_end_1_5_15"] = [round(load, 2) for load in __import__("os").getloadavg()]
    path = (
        results_path(machine, datetime.date.today().isoformat())
        if args.results == RESULTS_DIR
        else (args.results / results_path(machine, datetime.date.today().isoformat()).name)
    )
    write_results(path, machine=machine, sections=sections)
    print(f"\nResults written to {path}")
    return 0


def _run_stages(args: argparse.Namespace, *, var_dir: Path, command: str) -> dict:
    from django.apps import apps

    from bench import stages

    field_files = synthetic_fields(count=args.fields, size_px=args.size, seed=args.seed, data_dir=args.data)
    if not apps.ready:  # the test suite sets Django up itself
        configure_django(var_dir)
    from ml.classifier.predictor import Predictor
    from ml.segmentation import Segmenter

    segmenter = Segmenter("classical")
    predictor = Predictor.from_checkpoint(args.model, device="cpu") if args.model.is_file() else None
    from ml.pipeline import MeasureOptions

    # As the worker measures by default: shape, intensity, Haralick and LBP, QC flags; no scattering.
    measure = None if args.no_measure else MeasureOptions()
    timings, crops = stages.time_fields(field_files, segmenter=segmenter, predictor=predictor, measure=measure)
    summaries = stages.stage_summaries(timings)
    section = {
        "measured_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "settings": {
            "fields": args.fields,
            "size_px": args.size,
            "seed": args.seed,
            "model": str(args.model),
            "segmentation": segmenter.backend,
            "measurements": measure is not None,
            "device": "cpu",
        },  # fmt: skip
        "fields": [{"field_id": t.field_id, "cells": t.cells, "seconds": t.seconds} for t in timings],
        "summary_s": summaries,
    }
    no_model = f"not measured: no model at {args.model}"
    section["classifier"] = stages.classifier_cells_per_s(predictor, crops) if predictor else {"skipped": no_model}
    processes = len(__import__("os").sched_getaffinity(0)) if args.processes is None else args.processes
    if predictor is None or processes < 1:
        section["parallel"] = {"skipped": no_model if predictor is None else "--processes 0"}
    else:
        section["parallel"] = stages.parallel_fields_per_s(
            field_files, predictor=predictor, processes=processes, batch_cells=args.batch_cells
        )
    section["gpu"] = _run_gpu(args, field_files, crops) if predictor else {"skipped": no_model}
    section["targets"] = _targets(section)
    print(stage_report(section))
    return section


def _run_gpu(args: argparse.Namespace, field_files, crops) -> dict:
    import torch

    from bench import stages

    if not torch.cuda.is_available():
        return {"skipped": NO_GPU}
    predictor = stages.gpu_predictor(args.model)
    classifier = stages.classifier_cells_per_s(predictor, crops, min_cells=stages.GPU_CLASSIFIER_CELLS)
    processes = len(__import__("os").sched_getaffinity(0)) if args.processes is None else max(1, args.processes)
    parallel = stages.parallel_fields_per_s(
        field_files, predictor=predictor, processes=processes, batch_cells=stages.GPU_BATCH_SIZE
    )
    return {
        "device": torch.cuda.get_device_name(0),
        "autocast": "bfloat16",
        "classifier": classifier,
        "parallel": parallel,
    }


def _targets(section: dict) -> dict:
    floor_s = section["summary_s"]["decode_floor"]["median"]
    end_to_end_s = section["summary_s"]["end_to_end"]["median"]
    ratio = end_to_end_s / floor_s
    cells_per_s = section["classifier"].get("cells_per_s")
    gpu = section["gpu"]
    gpu_fields = gpu["parallel"]["fields_per_s"] if "parallel" in gpu else None
    gpu_cells = gpu["classifier"]["cells_per_s"] if "classifier" in gpu else None

    def target(reached: float | None, limit: float, *, at_most: bool = False, missing: str = NO_GPU) -> dict:
        if reached is None:
            return {"reached": None, "target": limit, "met": None, "note": missing}
        return {"reached": reached, "target": limit, "met": reached <= limit if at_most else reached >= limit}

    return {
        "cpu_end_to_end_floor_ratio": target(ratio, TARGET_FLOOR_RATIO, at_most=True),
        "cpu_classifier_cells_per_s": target(
            cells_per_s, TARGET_CPU_CELLS_PER_S, missing=section["classifier"].get("skipped", "")
        ),
        "gpu_end_to_end_fields_per_s": target(gpu_fields, TARGET_GPU_FIELDS_PER_S, missing=gpu.get("skipped", "")),
        "gpu_classifier_cells_per_s": target(gpu_cells, TARGET_GPU_CELLS_PER_S, missing=gpu.get("skipped", "")),
    }


def stage_report(section: dict) -> str:
    """The markdown tables of a stages section."""
    from bench.stages import STAGE_NAMES, STAGES

    settings, summaries = section["settings"], section["summary_s"]
    end_to_end_s = summaries["end_to_end"]["median"]
    cells = sorted(field["cells"] for field in section["fields"])
    rows = []
    for name in ("decode_floor", *STAGES, "end_to_end"):
        share = "" if name == "decode_floor" else f"{100 * summaries[name]['median'] / end_to_end_s:.0f} %"
        rows.append([STAGE_NAMES[name], f"{summaries[name]['median']:.3f}", f"{summaries[name]['max']:.3f}", share])
    lines = [
        f"## Stages: {settings['fields']} synthetic {settings['size_px']} px fields, one worker on the CPU",
        "",
        markdown_table(["stage", "median s", "max s", "share of end to end"], rows, align="lrrr"),
        "",
        f"Cells per field: median {cells[len(cells) // 2]}, range {cells[0]}-{cells[-1]}. "
        f"Segmentation: {settings['segmentation']}; model: {Path(settings['model']).name}.",
        "",
        "## Throughput",
        "",
        markdown_table(["measurement", "result"], _throughput_rows(section), align="lr"),
        "",
        "## Targets",
        "",
        markdown_table(["target", "reached", "met"], _target_rows(section), align="llr"),
    ]
    return "\n".join(lines)


def _throughput_rows(section: dict) -> list[list[str]]:
    classifier, parallel, gpu = section["classifier"], section["parallel"], section["gpu"]
    rows = []
    if "skipped" in classifier:
        rows.append(["classifier, CPU", classifier["skipped"]])
    else:
        rows.append([f"classifier, CPU ({classifier['cells']} crops, batch {classifier['batch_size']})",
                     f"{classifier['cells_per_s']:.0f} cells/s"])  # fmt: skip
    if "skipped" in parallel:
        rows.append(["analysis in parallel, CPU", f"not measured: {parallel['skipped']}"])
    else:
        rows.append([_parallel_name(parallel, "CPU"), f"{parallel['fields_per_s']:.2f} fields/s"])
    if "skipped" in gpu:
        rows.append(["classifier and analysis, GPU", gpu["skipped"]])
    else:
        rows.append([f"classifier, {gpu['device']} ({gpu['autocast']}, batch {gpu['classifier']['batch_size']})",
                     f"{gpu['classifier']['cells_per_s']:.0f} cells/s"])  # fmt: skip
        rows.append([_parallel_name(gpu["parallel"], gpu["device"]), f"{gpu['parallel']['fields_per_s']:.2f} fields/s"])
    return rows


def _parallel_name(parallel: dict, device: str) -> str:
    return (f"analysis (decode to probabilities), {parallel['processes']} processes, "
            f"classifier batches of {parallel['batch_cells']}+ cells on {device}")  # fmt: skip


def _target_rows(section: dict) -> list[list[str]]:
    targets, floor_s = section["targets"], section["summary_s"]["decode_floor"]["median"]
    end_to_end_s = section["summary_s"]["end_to_end"]["median"]

    def met(target: dict) -> str:
        return "-" if target["met"] is None else ("yes" if target["met"] else "no")

    def reached(target: dict, text: str) -> str:
        return target["note"] if target["reached"] is None else text

    ratio, cpu_cells = targets["cpu_end_to_end_floor_ratio"], targets["cpu_classifier_cells_per_s"]
    gpu_fields, gpu_cells = targets["gpu_end_to_end_fields_per_s"], targets["gpu_classifier_cells_per_s"]
    return [
        [f"CPU end to end{'' if section['settings'].get('measurements') else ' (without measurements)'} "
         f"<= {TARGET_FLOOR_RATIO:g} x decode floor",
         reached(ratio, f"{end_to_end_s:.2f} s = {ratio['reached']:.1f} x floor ({floor_s:.3f} s)"), met(ratio)],
        [f"CPU classifier >= {TARGET_CPU_CELLS_PER_S:g} cells/s",
         reached(cpu_cells, f"{cpu_cells['reached'] or 0:.0f} cells/s"), met(cpu_cells)],
        [f"GPU end to end >= {TARGET_GPU_FIELDS_PER_S:g} fields/s",
         reached(gpu_fields, f"{gpu_fields['reached'] or 0:.1f} fields/s"), met(gpu_fields)],
        [f"GPU classifier >= {TARGET_GPU_CELLS_PER_S:,.0f} cells/s",
         reached(gpu_cells, f"{gpu_cells['reached'] or 0:.0f} cells/s"), met(gpu_cells)],
    ]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
