# Pretrain and fine-tune runs. A killed job leaves its epoch checkpoints in work/; rerunning
# resumes from the latest (final.pth, the declared output, is written only at the end).
#
# On CPU (scales.<name>.gpus == 0) a run is one process with the scale's pinned threads, or
# `processes` of them under torchrun (gloo: pipeline/distributed.py). On GPUs it is one process
# per GPU under torchrun (mmengine's `pytorch` launcher), on devices that pipeline.gpu_slots
# reserves for it on this host (SLURM's own CUDA_VISIBLE_DEVICES is used as it is). torchrun is
# started as `python -m torch.distributed.run`, so its workers use the same Python as the job
# (the `torchrun` script of a base image may name another); the `--` keeps it from reading the
# stage's options as its own (it takes `--run` for `--run-path`).
TRAIN_STAGE = "train --scale {wildcards.scale} --run {wildcards.run} --seed {wildcards.seed}"
TORCHRUN = (
    "python -m torch.distributed.run --standalone --nproc_per_node " + str(PROCESSES) +
    f" -m -- pipeline --threads {{params.threads_per_process}} {TRAIN_STAGE} --launcher pytorch"
)
TRAIN_LAUNCH = (
    f"{CLI} {TRAIN_STAGE}"
    if GPUS == 0 and PROCESSES == 1
    else TORCHRUN
    if GPUS == 0
    else "python -m pipeline.gpu_slots {resources.gpu} -- " + TORCHRUN
)


rule train:
    input:
        unpack(train_inputs),
    output:
        CHECKPOINT,
    log:
        "work/{scale}/logs/{run}/seed{seed}/train.log",
    params:
        # torch threads of each process: the job's threads shared among its processes
        threads_per_process=lambda wildcards, threads: max(1, threads // PROCESSES),
    threads: CPU_THREADS * PROCESSES if GPUS == 0 else 8 * GPUS
    resources:
        gpu=GPUS,
    shell:
        f"{TRAIN_LAUNCH} > {{log}} 2>&1"
