rule tune:
    """Sweep the units of one shard over their range, render, record the realised activation."""
    input:
        PATHS.link_model("{clf}"),
        PATHS.select_arrays("{clf}"),
    output:
        table=PATHS.tune_table("{clf}", "{shard}"),
        arrays=PATHS.tune_arrays("{clf}", "{shard}"),
    log:
        PATHS.log("tune", "{clf}", "{shard}"),
    benchmark:
        PATHS.benchmark("tune", "{clf}", "{shard}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("tune"),
    shell:
        "python -m linkstyle tune --config {params.resolved} --threads {threads} --classifier {wildcards.clf} --shard {wildcards.shard} > {log} 2>&1"


SEGMENTER = [PATHS.segmenter_model] if CFG.measure.segmenter == "learned" else []


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
        "python -m linkstyle measure --config {params.resolved} --threads {threads} --classifier {wildcards.clf} --shard {wildcards.shard} > {log} 2>&1"


rule reference:
    """Render, segment and measure linked held-out samples: the spread of every property, which scales each unit's changes."""
    input:
        PATHS.link_model("{clf}"),
        PATHS.select_arrays("{clf}"),
        SEGMENTER,
    output:
        PATHS.reference_spread("{clf}"),
    log:
        PATHS.log("reference", "{clf}"),
    benchmark:
        PATHS.benchmark("reference", "{clf}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("reference"),
    shell:
        "python -m linkstyle reference --config {params.resolved} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"


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
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("selectivity"),
    shell:
        "python -m linkstyle selectivity --config {params.resolved} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"
