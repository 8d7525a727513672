rule select:
    """Keep the samples a classifier gets right; split train/test by seed; pick sweep starts and bounds."""
    input:
        [PATHS.extract_table(c, s) for c in CFG.classes for s in range(CFG.sample.shards_per_class)],
        [PATHS.extract_arrays(c, s) for c in CFG.classes for s in range(CFG.sample.shards_per_class)],
    output:
        table=PATHS.select_table("{clf}"),
        arrays=PATHS.select_arrays("{clf}"),
    log:
        PATHS.log("select", "{clf}"),
    benchmark:
        PATHS.benchmark("select", "{clf}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("select"),
    shell:
        stage_shell("select")
