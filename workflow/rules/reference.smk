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
    # See selectivity: its classifier's selectivity job waits for it.
    priority: 2
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("reference"),
    shell:
        stage_shell("reference")
