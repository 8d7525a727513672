rule report:
    """Figures, report.html and summary.json for the whole run."""
    input:
        [PATHS.classifier_metrics(c) for c in TRAINED],
        [PATHS.link_metrics(c) for c in CLASSIFIERS],
        [PATHS.selectivity_units(c) for c in CLASSIFIERS],
        [PATHS.selectivity_features(c) for c in CLASSIFIERS],
        [PATHS.selectivity_population(c) for c in CLASSIFIERS],
        [PATHS.selectivity_recovery(c) for c in CLASSIFIERS],
        [PATHS.tune_arrays(c, s) for c in CLASSIFIERS for s in range(SHARDS[c])],
        [PATHS.counterfactual_items(c) for c in CLASSIFIERS],
        [PATHS.counterfactual_arrays(c) for c in CLASSIFIERS],
        [PATHS.counterfactual_drivers(c) for c in CLASSIFIERS],
        [PATHS.counterfactual_factors(c) for c in CLASSIFIERS],
        [PATHS.counterfactual_metrics(c) for c in CLASSIFIERS],
    output:
        report=PATHS.report,
        summary=PATHS.summary,
    params:
        config=digest("report"),
    log:
        PATHS.log("report"),
    benchmark:
        PATHS.benchmark("report")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} report --config {CONFIG} --threads {threads} > {log} 2>&1"
