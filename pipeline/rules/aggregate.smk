# Tables 1-5, Figure 4 and REPORT.md of the profile.
TABLES = [f"{RESULTS}/tables/table{i}.{ext}" for i in range(1, 6) for ext in ("md", "csv", "tex")]
FIGURES = [f"{RESULTS}/figures/figure4.{ext}" for ext in ("png", "svg", "csv")]


def aggregate_outputs():
    return TABLES + FIGURES + [f"{RESULTS}/REPORT.md"]


rule aggregate:
    input:
        metrics=expand(METRICS, profile=PROFILE, run=list(RUNS), seed=SEEDS),
        analysis=expand(ANALYSIS, profile=PROFILE, run=mx.analysed_runs(MATRIX), seed=SEEDS),
        paper="pipeline/paper.yaml",
    output:
        aggregate_outputs(),
    log:
        f"work/{PROFILE}/logs/aggregate.log",
    shell:
        f"{CLI} aggregate --profile {PROFILE} > {{log}} 2>&1"
