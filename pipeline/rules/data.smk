# Data: synthesized or fetched, as the matrix's `scales.<name>.data` says (`python -m pipeline
# data` does either).
rule data:
    output:
        [data_marker(d) for d in MATRIX["datasets"]],
    log:
        f"work/{SCALE}/logs/data.log",
    retries: 2 if SPEC["data"] == "fetch" else 0
    shell:
        f"{CLI} data --scale {SCALE} > {{log}} 2>&1"
