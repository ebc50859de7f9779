# Pretrain and fine-tune runs. A killed job leaves its epoch checkpoints in work/; rerunning
# resumes from the latest (final.pth, the declared output, is written only at the end).
#
# On CPU (profiles.<name>.gpus == 0) a run is one process. On GPUs it is one process per GPU
# under torchrun (mmengine's `pytorch` launcher), on devices that pipeline.gpu_slots reserves
# for it on this host (SLURM's own CUDA_VISIBLE_DEVICES is used as it is).
TRAIN_ARGS = ("train --profile {wildcards.profile} --run {wildcards.run} --seed {wildcards.seed}")


def threads_per_process(wildcards, threads):
    """torch threads of each of the run's processes: the job's threads shared among its GPUs."""
    return max(1, threads // max(GPUS, 1))


def train_command():
    if GPUS == 0:
        return CLI + " --threads {threads} " + TRAIN_ARGS + " > {log} 2>&1"
    return ("python -m pipeline.gpu_slots {resources.gpu} --"
            " torchrun --standalone --nproc_per_node {resources.gpu}"
            " -m pipeline --threads {params.threads_per_process} "
            + TRAIN_ARGS + " --launcher pytorch > {log} 2>&1")


rule train:
    input:
        unpack(train_inputs),
    output:
        CHECKPOINT,
    log:
        "work/{profile}/{run}/seed{seed}/train.log",
    params:
        threads_per_process=threads_per_process,
    threads: 1 if GPUS == 0 else 8 * GPUS
    resources:
        gpu=GPUS,
    shell:
        train_command()
