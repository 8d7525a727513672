rule measure:
    """Measure every part of every image of one tuned shard (CPU only, unless a learned segmenter sees generator maps)."""
    input:
        PATHS.tune_arrays("{clf}", "{shard}"),
        SEGMENTER,
    output:
        PATHS.measure_table("{clf}", "{shard}"),
    log:
        PATHS.log("measure", "{clf}", "{shard}"),
    benchmark:
        PATHS.benchmark("measure", "{clf}", "{shard}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("measure"),
    shell:
        stage_shell("measure")
