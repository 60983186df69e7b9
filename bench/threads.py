"""PyTorch's CPU threads beside the analysis's own: crops and classification on torch's thread count
against one thread (`ml.pipeline.CPU_THREADS_BESIDE_OTHERS`), while the measurements and pictures run.

Each synthetic 2048 px field (`bench.common.synthetic_fields`, the `make bench` fields) is decoded
and analysed as the worker analyses it (`ml.pipeline.analyse_field` with measurements, quality
control and pictures; no database), once with each setting, the order alternating from round to
round so that both see the same load on a shared machine. Per setting: the medians of end to end,
of the process's CPU time per field, and of crops plus classification.

    .venv/bin/python -m bench.threads [--fields 4] [--rounds 4]
"""

import argparse
import statistics
import time

from bench.common import markdown_table, synthetic_fields


def compare(*, fields: int, rounds: int) -> dict[str, dict[str, float]]:
    import torch

    import ml.pipeline
    from ml.classifier.predictor import Predictor
    from ml.constants import DEFAULT_MODEL_PATH
    from ml.io import read_field
    from ml.pipeline import MeasureOptions, analyse_field
    from ml.segmentation import Segmenter

    predictor = Predictor.from_checkpoint(DEFAULT_MODEL_PATH, device="cpu")
    segmenter = Segmenter("classical")
    files = synthetic_fields(count=fields, size_px=2048)
    settings = {f"torch's {torch.get_num_threads()} threads": 0, "1 thread": 1}

    def analyse(channel_files) -> tuple[float, float, float]:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = analyse_field(
            read_field(channel_files), segmenter=segmenter, predictor=predictor, measure=MeasureOptions(), viewer=True
        )
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return wall, cpu, result.timings_s["crops"] + result.timings_s["classification"]

    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in settings}
    configured = ml.pipeline.CPU_THREADS_BESIDE_OTHERS
    try:
        for threads in settings.values():  # warm-up: imports, thread pools
            ml.pipeline.CPU_THREADS_BESIDE_OTHERS = threads
            analyse(files[0])
        for round_index in range(rounds):
            order = list(settings.items()) if round_index % 2 == 0 else list(reversed(settings.items()))
            for channel_files in files:
                for name, threads in order:
                    ml.pipeline.CPU_THREADS_BESIDE_OTHERS = threads
                    samples[name].append(analyse(channel_files))
    finally:
        ml.pipeline.CPU_THREADS_BESIDE_OTHERS = configured
    return {
        name: {
            "end_to_end_s": statistics.median(wall for wall, _, _ in rows),
            "cpu_s": statistics.median(cpu for _, cpu, _ in rows),
            "crops_classification_s": statistics.median(part for _, _, part in rows),
            "fields": len(rows),
        }
        for name, rows in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    results = compare(fields=args.fields, rounds=args.rounds)
    print(
        markdown_table(
            ["crops and classification on", "fields", "end to end s", "CPU s per field", "crops + classification s"],
            [
                [
                    name,
                    str(row["fields"]),
                    f"{row['end_to_end_s']:.3f}",
                    f"{row['cpu_s']:.3f}",
                    f"{row['crops_classification_s']:.3f}",
                ]
                for name, row in results.items()
            ],
            align="lrrrr",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
