# Data: the synthetic LVIS for smoke, the verified download for full (the matrix's
# `profiles.<name>.data` chooses; `python -m pipeline data` does either).
rule data:
    output:
        [data_marker(d) for d in MATRIX["datasets"]],
    log:
        f"work/{PROFILE}/logs/data.log",
    retries: 2 if PROF["data"] == "fetch" else 0
    shell:
        f"{CLI} data --profile {PROFILE} > {{log}} 2>&1"
