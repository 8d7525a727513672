def trained_base(wildcards):
    """A planted classifier is fitted on its base's trained network."""
    clf = CFG.classifier(wildcards.clf)
    return [PATHS.classifier_weights(clf.base)] if clf.kind == "planted" else []


def train_spec(wildcards):
    """The classifier's entry (without the units analysed, which never change training), and a planted one's base."""
    clf = CFG.classifier(wildcards.clf)
    spec = classifier_spec(wildcards)
    return f"{spec} base={clf.base!r}" if clf.kind == "planted" else spec


rule train_classifier:
    """Train a demo classifier on the built-in world, from seeds disjoint from the analysis; or plant
    units into a trained demo classifier (kind planted; its job also writes planted.json, what it planted)."""
    input:
        trained_base,
    output:
        weights=PATHS.classifier_weights("{clf}"),
        metrics=PATHS.classifier_metrics("{clf}"),
    params:
        spec=train_spec,
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
