# Shared by all rule modules: the validated config and matrix, and path patterns derived from
# pipeline/matrix.py so that no path is spelled twice.
import re
import sys

sys.path.insert(0, workflow.basedir)

from snakemake.utils import validate

from pipeline import matrix as mx

validate(config, "../schemas/snakemake.schema.yaml")
MATRIX = mx.load()
PROFILE = config["profile"]
PROF = mx.profile(MATRIX, PROFILE)
RUNS = mx.runs(MATRIX)
SEEDS = PROF["seeds"]
GPUS = PROF["gpus"]
CLI = "python -m pipeline"
# On GPUs, one-GPU jobs also take a device from pipeline.gpu_slots, so that on one machine they
# never land on a device a training job holds (SLURM's own CUDA_VISIBLE_DEVICES is kept).
ON_GPU = "" if GPUS == 0 else "python -m pipeline.gpu_slots {resources.gpu} -- "


def rel(path):
    return str(path.relative_to(mx.ROOT))


# Patterns with wildcards, built by the same functions the stages use.
CHECKPOINT = rel(mx.checkpoint("{profile}", "{run}", "{seed}"))
METRICS = rel(mx.metrics_path("{profile}", "{run}", "{seed}"))
ANALYSIS = rel(mx.analysis_path("{profile}", "{run}", "{seed}"))
RESULTS = rel(mx.results_dir(PROFILE))


wildcard_constraints:
    profile="smoke|full",
    run="|".join(map(re.escape, RUNS)),
    seed=r"\d+",


def data_marker(dataset):
    """The train annotation file stands for the whole dataset being present."""
    return rel(mx.data_root(MATRIX, PROFILE, dataset) / "annotations" / f"{dataset}_train.json")


def run_config(wildcards):
    return rel(mx.config_path(MATRIX, wildcards.profile, RUNS[wildcards.run]["config"]))


def train_inputs(wildcards):
    spec = RUNS[wildcards.run]
    inputs = dict(config=run_config(wildcards), data=data_marker(spec["dataset"]))
    if spec["pretrain"]:
        inputs["pretrain"] = CHECKPOINT.format(profile=wildcards.profile, run=spec["pretrain"],
                                               seed=wildcards.seed)
    return inputs
