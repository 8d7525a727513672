rule link:
    """Fit the linking map r -> w (OLS and ridge) and evaluate it on the test split."""
    input:
        PATHS.select_table("{clf}"),
        PATHS.select_arrays("{clf}"),
    output:
        model=PATHS.link_model("{clf}"),
        metrics=PATHS.link_metrics("{clf}"),
    log:
        PATHS.log("link", "{clf}"),
    benchmark:
        PATHS.benchmark("link", "{clf}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("link"),
    shell:
        stage_shell("link")
