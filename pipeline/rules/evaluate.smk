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
