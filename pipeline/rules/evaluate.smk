# LVIS AP of every run, and the per-class statistics of the Figure 4 runs.
rule evaluate:
    input:
        checkpoint=CHECKPOINT,
        config=CONFIG,
        code=FINGERPRINTS["evaluate"],
    output:
        METRICS,
    log:
        "work/{scale}/logs/{run}/seed{seed}/evaluate.log",
    threads: CPU_THREADS if GPUS == 0 else 8
    resources:
        gpu=min(GPUS, 1),
    shell:
        ON_GPU + CLI + (" --threads {threads}" if GPUS else "") + " evaluate --scale {wildcards.scale}"
        " --run {wildcards.run} --seed {wildcards.seed} > {log} 2>&1"


rule analyse:
    input:
        checkpoint=CHECKPOINT,
        config=CONFIG,
        code=FINGERPRINTS["analyse"],
    output:
        ANALYSIS,
    log:
        "work/{scale}/logs/{run}/seed{seed}/analyse.log",
    threads: CPU_THREADS if GPUS == 0 else 8
    resources:
        gpu=min(GPUS, 1),
    shell:
        ON_GPU + CLI + (" --threads {threads}" if GPUS else "") + " analyse --scale {wildcards.scale}"
        " --run {wildcards.run} --seed {wildcards.seed} > {log} 2>&1"


# The authors' released checkpoints (pipeline/released.py), at the full scale: one job per file
# downloaded to its place (experiments.yaml `released`: file); a file not there is no job.
RELEASED = released_models.present(MATRIX, SCALE)
RELEASED_METRICS = rel(released_models.metrics_path("{scale}", "{name}"))


rule released:
    input:
        checkpoint=lambda wildcards: MATRIX["released"][wildcards.name]["file"],
        config=lambda wildcards: rel(
            mx.config_path(MATRIX, SCALE, MATRIX["released"][wildcards.name]["config"])
        ),
        code=[FINGERPRINTS["evaluate"], "pipeline/released.py"],
    output:
        RELEASED_METRICS,
    log:
        "work/{scale}/logs/released/{name}/evaluate.log",
    wildcard_constraints:
        name="|".join(map(re.escape, MATRIX.get("released", {}))),
    threads: CPU_THREADS if GPUS == 0 else 8
    resources:
        gpu=min(GPUS, 1),
    shell:
        ON_GPU + CLI + (" --threads {threads}" if GPUS else "") + " evaluate --scale {wildcards.scale}"
        " --released {wildcards.name} --checkpoint {input.checkpoint} > {log} 2>&1"
