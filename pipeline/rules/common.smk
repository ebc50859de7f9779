# Shared by every module of rules. The validated config and matrix, and path patterns derived from
# pipeline/matrix.py so that no path is spelled twice.
#
# At parse time every run's resolved config (pipeline/runconfig.py) and every stage's code
# fingerprint (pipeline/provenance.py) is written, each file only when its content changes.
# Rules take them as inputs, so Snakemake reruns exactly the jobs whose resolved config or code
# changed (and their dependants); editing nothing reruns nothing.
import re
import sys

sys.path.insert(0, workflow.basedir)

from snakemake.utils import validate

from pipeline import matrix as mx
from pipeline import provenance, runconfig
from pipeline import released as released_models
from pipeline.aggregate import outputs as aggregate_outputs

validate(config, "../schemas/snakemake.schema.yaml")
mx.check_tables(config.get("tables"), "--config tables")
MATRIX = mx.load()
SCALE = config["scale"]
SPEC = mx.scale(MATRIX, SCALE)
RUNS = mx.runs_at(MATRIX, SCALE, config.get("tables"))
if config.get("runs"):
    for _run in config["runs"]:
        mx.run_spec(MATRIX, _run, SCALE)
        if RUNS[_run]["pretrain"] and RUNS[_run]["pretrain"] not in config["runs"]:
            raise SystemExit(f"--config runs: {_run} needs its pretrain run {RUNS[_run]['pretrain']}")
    RUNS = {run: spec for run, spec in RUNS.items() if run in config["runs"]}
GPUS = SPEC["gpus"]
# Training processes per run: one per GPU, or on CPU the scale's `processes` (torchrun + gloo).
PROCESSES = GPUS or SPEC.get("processes", 1)
# CPU scales pin the threads of each process (pipeline/determinism.py): jobs ask for as many.
CPU_THREADS = SPEC.get("threads", 1)
CLI = "python -m pipeline"
# On GPUs, one-GPU jobs also take a device from pipeline.gpu_slots, so that on one machine they
# never land on a device a training job holds (SLURM's own CUDA_VISIBLE_DEVICES is kept).
ON_GPU = "" if GPUS == 0 else "python -m pipeline.gpu_slots {resources.gpu} -- "

RUN_SEEDS = {run: mx.run_seeds(MATRIX, SCALE, run) for run in RUNS}
for _run, _seeds in RUN_SEEDS.items():
    for _seed in _seeds:
        runconfig.resolve_and_write(MATRIX, SCALE, _run, _seed)
FINGERPRINTS = {
    stage: mx.rel(provenance.write_fingerprint(
        mx.ROOT / "work" / SCALE / "code" / f"{stage}.sha256", provenance.code_sha256(stage)))
    for stage in provenance.STAGE_CODE
}


def rel(path):
    return str(path.relative_to(mx.ROOT))


# Patterns with wildcards, built by the same functions the stages use.
CHECKPOINT = rel(mx.checkpoint("{scale}", "{run}", "{seed}"))
CONFIG = rel(mx.resolved_config("{scale}", "{run}", "{seed}"))
METRICS = rel(mx.metrics_path("{scale}", "{run}", "{seed}"))
ANALYSIS = rel(mx.analysis_path("{scale}", "{run}", "{seed}"))
RESULTS = rel(mx.results_dir(SCALE))


def data_marker(dataset):
    """The train annotation file stands for the whole dataset being present."""
    return rel(mx.annotation_files(MATRIX, SCALE, dataset)[0])


def train_inputs(wildcards):
    spec = RUNS[wildcards.run]
    inputs = dict(config=CONFIG.format(**wildcards), code=FINGERPRINTS["train"],
                  data=data_marker(spec["dataset"]))
    if spec["pretrain"]:
        seed = mx.pretrain_seed(MATRIX, SCALE, int(wildcards.seed))
        inputs["pretrain"] = CHECKPOINT.format(scale=wildcards.scale, run=spec["pretrain"],
                                               seed=seed)
    return inputs


def per_run(pattern, runs):
    """`pattern` for every run given (of those this invocation runs) and every seed it trains."""
    return [pattern.format(scale=SCALE, run=run, seed=seed) for run in runs if run in RUNS
            for seed in RUN_SEEDS[run]]


def reported(name):
    """An aggregate output, flagged for `snakemake --report` where it is one a reader looks at
    (the tables, Figure 4, REPORT.md), with its caption from pipeline/report/ (paths relative to
    rules/aggregate.smk, where it is used)."""
    path = f"{RESULTS}/{name}"
    if name.startswith("tables/") and name.endswith(".md"):
        return report(path, caption="../report/table.rst", category="Tables")
    if name == "figures/figure4.png":
        return report(path, caption="../report/figure4.rst", category="Figure 4")
    if name == "REPORT.md":
        return report(path, caption="../report/report.rst", category="Report")
    return path
