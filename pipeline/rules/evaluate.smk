# LVIS AP of every run, and the per-class statistics of the Figure 4 runs.
rule evaluate:
    input:
        checkpoint=CHECKPOINT,
        config=run_config,
    output:
        METRICS,
    log:
        "work/{profile}/{run}/seed{seed}/evaluate.log",
    threads: 1 if GPUS == 0 else 8
    resources:
        gpu=min(GPUS, 1),
    shell:
        ON_GPU + CLI + " --threads {threads} evaluate --profile {wildcards.profile} --run {wildcards.run}"
        " --seed {wildcards.seed} > {log} 2>&1"


rule analyse:
    input:
        checkpoint=CHECKPOINT,
        config=run_config,
    output:
        ANALYSIS,
    log:
        "work/{profile}/{run}/seed{seed}/analyse.log",
    threads: 1 if GPUS == 0 else 8
    resources:
        gpu=min(GPUS, 1),
    shell:
        ON_GPU + CLI + " --threads {threads} analyse --profile {wildcards.profile} --run {wildcards.run}"
        " --seed {wildcards.seed} > {log} 2>&1"
