rule selectivity:
    """Explain every unit of a classifier from its shards: effects, ranked concepts, faithfulness and gain, population shares."""
    input:
        unit_shard_files(PATHS.tune_table),
        unit_shard_files(PATHS.measure_table),
        PATHS.reference_spread("{clf}"),
        planted_spec,
    output:
        features=PATHS.selectivity_features("{clf}"),
        units=PATHS.selectivity_units("{clf}"),
        explanations=PATHS.selectivity_explanations("{clf}"),
        population=PATHS.selectivity_population("{clf}"),
        recovery=PATHS.selectivity_recovery("{clf}"),
        planted=PATHS.selectivity_planted("{clf}"),
    log:
        PATHS.log("selectivity", "{clf}"),
    benchmark:
        PATHS.benchmark("selectivity", "{clf}")
    # Short jobs that the end of the run waits for: each runs as soon as it can, not after every
    # other ready job (a classifier's actmax then overlaps the others' measure jobs).
    priority: 2
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("selectivity"),
    shell:
        stage_shell("selectivity")
