rule extract:
    """Render one sample shard once and record every classifier's features and verdict."""
    input:
        PATHS.samples("{cls}", "{shard}"),
        classifier_weights,
    output:
        table=PATHS.extract_table("{cls}", "{shard}"),
        arrays=PATHS.extract_arrays("{cls}", "{shard}"),
    log:
        PATHS.log("extract", "{cls}", "{shard}"),
    benchmark:
        PATHS.benchmark("extract", "{cls}", "{shard}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("extract"),
    shell:
        stage_shell("extract")
