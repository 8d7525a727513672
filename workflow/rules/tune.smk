rule tune:
    """Sweep the units of one shard over their range, render, record the realised activation."""
    input:
        PATHS.link_model("{clf}"),
        PATHS.select_arrays("{clf}"),
    output:
        table=PATHS.tune_table("{clf}", "{shard}"),
        arrays=PATHS.tune_arrays("{clf}", "{shard}"),
    log:
        PATHS.log("tune", "{clf}", "{shard}"),
    benchmark:
        PATHS.benchmark("tune", "{clf}", "{shard}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("tune"),
    shell:
        stage_shell("tune")
