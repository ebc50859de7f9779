# Tables 1-5, Figure 4 and REPORT.md of the scale (the file list is pipeline.aggregate.outputs).
# The Markdown tables, Figure 4 and REPORT.md are flagged for `snakemake --report report.html`
# (reported() in common.smk; captions in pipeline/report/).
AGGREGATE_OUTPUTS = [f"{RESULTS}/{name}" for name in aggregate_outputs(SCALE, MATRIX)]


rule aggregate:
    input:
        metrics=per_run(METRICS, RUNS),
        analysis=per_run(ANALYSIS, mx.analysed_runs(MATRIX, SCALE)),
        released=[RELEASED_METRICS.format(scale=SCALE, name=name) for name in RELEASED],
        paper="pipeline/paper.yaml",
    output:
        [reported(name) for name in aggregate_outputs(SCALE, MATRIX)],
    log:
        f"work/{SCALE}/logs/aggregate.log",
    shell:
        f"{CLI} aggregate --scale {SCALE} > {{log}} 2>&1"
