rule sample:
    """Draw the latents of one shard of one class."""
    output:
        PATHS.samples("{cls}", "{shard}"),
    log:
        PATHS.log("sample", "{cls}", "{shard}"),
    benchmark:
        PATHS.benchmark("sample", "{cls}", "{shard}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("sample"),
    shell:
        "python -m linkstyle sample --config {params.resolved} --threads {threads} --cls {wildcards.cls} --shard {wildcards.shard} > {log} 2>&1"


rule extract:
    """Render one sample shard once and record every classifier's features and verdict."""
    input:
        PATHS.samples("{cls}", "{shard}"),
        classifier_weights,
    output:
        table=PATHS.extract_table("{cls}", "{shard}"),
        arrays=PATHS.extract_arrays("{cls}", "{shard}"),
    log:
        PATHS.log("extract", "{cls}", "{shard}"),
    benchmark:
        PATHS.benchmark("extract", "{cls}", "{shard}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("extract"),
    shell:
        "python -m linkstyle extract --config {params.resolved} --threads {threads} --cls {wildcards.cls} --shard {wildcards.shard} > {log} 2>&1"


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
        "python -m linkstyle select --config {params.resolved} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"
