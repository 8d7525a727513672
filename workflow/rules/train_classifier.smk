rule train_classifier:
    """Train a demo classifier on the built-in world, from seeds disjoint from the analysis; or plant
    units into a trained demo classifier (kind planted; its job also writes planted.json, what it planted)."""
    input:
        trained_base,
    output:
        weights=PATHS.classifier_weights("{clf}"),
        metrics=PATHS.classifier_metrics("{clf}"),
    log:
        PATHS.log("train_classifier", "{clf}"),
    benchmark:
        PATHS.benchmark("train_classifier", "{clf}")
    # Both cores, and nothing else needs what the others make first: training starts at once, so a
    # one-core job (the segmenter's training) never holds a core while it waits.
    priority: 3
    conda:
        "../../envs/linkstyle.yaml"
    threads: 2
    params:
        resolved=CONFIG,
        spec=train_spec,
        config=digest("train_classifier"),
    shell:
        stage_shell("train_classifier")
