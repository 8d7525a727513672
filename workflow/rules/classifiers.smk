rule train_classifier:
    """Train a demo classifier on the built-in world, from seeds disjoint from the analysis."""
    output:
        weights=PATHS.classifier_weights("{clf}"),
        metrics=PATHS.classifier_metrics("{clf}"),
    params:
        spec=classifier_spec,
        config=digest("train"),
    log:
        PATHS.log("train_classifier", "{clf}"),
    benchmark:
        PATHS.benchmark("train_classifier", "{clf}")
    threads: 2
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} train --config {CONFIG} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"
