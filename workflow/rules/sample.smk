rule sample:
    """Draw the latents of one shard of one class."""
    output:
        PATHS.samples("{cls}", "{shard}"),
    log:
        PATHS.log("sample", "{cls}", "{shard}"),
    benchmark:
        PATHS.benchmark("sample", "{cls}", "{shard}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("sample"),
    shell:
        stage_shell("sample")
