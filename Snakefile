# The reproduction DAG. Runs, seeds and paths come from pipeline/experiments.yaml (via
# pipeline/matrix.py); the rules are in pipeline/rules/.
#   snakemake --cores 2 --config scale=smoke      # offline synthetic LVIS on CPU
#   snakemake -n --config scale=full              # plan the paper-scale reproduction
import re

from snakemake.utils import min_version

min_version("9.0")


configfile: "pipeline/snakemake.yaml"


# `snakemake --report report.html`: the tables, Figure 4 and REPORT.md (rules/aggregate.smk).
report: "pipeline/report/workflow.rst"


# Every job runs in this image, but only under `--sdm apptainer` (docker/README.md); without
# that flag Snakemake ignores the directive and jobs use the current environment.
container: config["container_image"]


include: "pipeline/rules/common.smk"


wildcard_constraints:
    scale="|".join(map(re.escape, MATRIX["scales"])),
    run="|".join(map(re.escape, RUNS)),
    seed=r"\d+",


include: "pipeline/rules/data.smk"
include: "pipeline/rules/train.smk"
include: "pipeline/rules/evaluate.smk"
include: "pipeline/rules/aggregate.smk"


# Downloads and table-making run where Snakemake runs (a cluster's login node), not as jobs.
localrules:
    data,
    aggregate,


rule all:
    default_target: True
    input:
        AGGREGATE_OUTPUTS,
