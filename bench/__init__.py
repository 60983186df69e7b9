"""Benchmarks: each runs as `python -m bench.<name>` and prints markdown tables; none asserts anything.

- `bench.pipeline` (also `python -m bench`, `make bench`): the worker's code path stage by stage on
  synthetic fields (`bench.stages`), with `--system` fields per minute through the API with 1 and 2
  worker processes on Redis and PostgreSQL (`bench.system`), and `--memory` a real worker's
  resident memory over consecutive 3072 px fields (`bench.memory`);
- `bench.postprocess`: the `unet` backend's post-processing against the HPA reference's time;
- `bench.classifier`: the classifier's cells per second by batch size;
- `bench.bioimageio`: per-field classification time of the shipped model exported to bioimage.io
  and imported, against the native model;
- `bench.seg_quality`: the classical segmentation against the reference masks of the real fields;
- `bench.fingerprint`: SHA-256 of every result on the real and synthetic fields, to show that a change
  leaves them bit-identical.
- `bench.familiarity`: the share of cells the shipped classifier flags unfamiliar on held-out synthetic
  and on real fields, the AUROC of its familiarity score at telling them apart, and its cost;
- `bench.models_memory`: a process's resident memory holding one loaded classifier against three;
- `bench.threads`: a field's analysis with crops and classification on torch's threads against one
  thread, beside the measurement and picture threads.

Shared helpers live in `bench.common`.
"""
