rule atlas:
    """The unit atlas: every unit of every classifier, with its sweeps, changes and the counterfactuals it drives (opens from disk)."""
    input:
        [PATHS.selectivity_units(c) for c in CLASSIFIERS],
        [PATHS.selectivity_features(c) for c in CLASSIFIERS],
        [PATHS.counterfactual_items(c) for c in SEARCHED],
        [PATHS.counterfactual_drivers(c) for c in SEARCHED],
        [PATHS.tune_arrays(c, s) for c in CLASSIFIERS for s in range(SHARDS[c])],
        [PATHS.actmax_arrays(c) for c in CLASSIFIERS],
    output:
        directory(PATHS.atlas),
    log:
        PATHS.log("atlas"),
    benchmark:
        PATHS.benchmark("atlas")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("atlas"),
    shell:
        stage_shell("atlas")
