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


rule selectivity:
    """Reduce every shard of a classifier to per-unit changes, faithfulness, concept labels and population shares."""
    input:
        unit_shard_files(PATHS.tune_table),
        unit_shard_files(PATHS.measure_table),
    output:
        features=PATHS.selectivity_features("{clf}"),
        units=PATHS.selectivity_units("{clf}"),
        population=PATHS.selectivity_population("{clf}"),
        recovery=PATHS.selectivity_recovery("{clf}"),
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
