def unit_shard_files(path_of):
    def files(wildcards):
        return [path_of(wildcards.clf, s) for s in range(SHARDS[wildcards.clf])]

    return files


rule tune:
    """Sweep the units of one shard over their range, render, record the realised activation."""
    input:
        PATHS.link_model("{clf}"),
        PATHS.select_arrays("{clf}"),
    output:
        table=PATHS.tune_table("{clf}", "{shard}"),
        arrays=PATHS.tune_arrays("{clf}", "{shard}"),
    params:
        config=digest("tune"),
    log:
        PATHS.log("tune", "{clf}", "{shard}"),
    benchmark:
        PATHS.benchmark("tune", "{clf}", "{shard}")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} tune --config {CONFIG} --threads {threads} --classifier {wildcards.clf} --shard {wildcards.shard} > {log} 2>&1"


SEGMENTER = [PATHS.segmenter_model] if CFG.measure.segmenter == "learned" else []


rule measure:
    """Measure every part of every image of one tuned shard (CPU only, unless a learned segmenter sees generator maps)."""
    input:
        PATHS.tune_arrays("{clf}", "{shard}"),
        SEGMENTER,
    output:
        PATHS.measure_table("{clf}", "{shard}"),
    params:
        config=digest("measure"),
    log:
        PATHS.log("measure", "{clf}", "{shard}"),
    benchmark:
        PATHS.benchmark("measure", "{clf}", "{shard}")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} measure --config {CONFIG} --threads {threads} --classifier {wildcards.clf} --shard {wildcards.shard} > {log} 2>&1"


rule reference:
    """Render, segment and measure linked held-out samples: the spread of every property, which scales each unit's changes."""
    input:
        PATHS.link_model("{clf}"),
        PATHS.select_arrays("{clf}"),
        SEGMENTER,
    output:
        PATHS.reference_spread("{clf}"),
    params:
        config=digest("reference"),
    log:
        PATHS.log("reference", "{clf}"),
    benchmark:
        PATHS.benchmark("reference", "{clf}")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} reference --config {CONFIG} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"


def planted_spec(wildcards):
    """A planted classifier's record of what it planted (kind 'planted'): written with its weights, by the same job."""
    return [PATHS.classifier_weights(wildcards.clf)] if CFG.classifier(wildcards.clf).kind == "planted" else []


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
    params:
        config=digest("selectivity"),
    log:
        PATHS.log("selectivity", "{clf}"),
    benchmark:
        PATHS.benchmark("selectivity", "{clf}")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} selectivity --config {CONFIG} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"
