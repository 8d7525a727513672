rule link:
    """Fit the linking map r -> w (OLS and ridge) and evaluate it on the test split."""
    input:
        PATHS.select_table("{clf}"),
        PATHS.select_arrays("{clf}"),
    output:
        model=PATHS.link_model("{clf}"),
        metrics=PATHS.link_metrics("{clf}"),
    params:
        config=digest("link"),
    log:
        PATHS.log("link", "{clf}"),
    benchmark:
        PATHS.benchmark("link", "{clf}")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} link --config {CONFIG} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"
