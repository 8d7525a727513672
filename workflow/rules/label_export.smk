# The few-shot part segmenter (measure.segmenter: learned); docs/segmentation.md.


rule label_export:
    """Render the images to label (and, on the built-in world, their exact masks); add swept ones."""
    input:
        swept_label_inputs,
    output:
        manifest=PATHS.label_manifest,
        latents=PATHS.label_latents,
    log:
        PATHS.log("label_export"),
    benchmark:
        PATHS.benchmark("label_export")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("label_export"),
    shell:
        "python -m linkstyle label export --config {params.resolved} --threads {threads} > {log} 2>&1"


rule label_import:
    """Check the label maps against the exported images and measure.parts; pack them for training."""
    input:
        PATHS.label_manifest,
        PATHS.label_latents,
        user_label_maps,
    output:
        PATHS.segmenter_labels,
    log:
        PATHS.log("label_import"),
    benchmark:
        PATHS.benchmark("label_import")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("label_import"),
    shell:
        "python -m linkstyle label import --config {params.resolved} --threads {threads} > {log} 2>&1"


rule train_segmenter:
    """Train the part segmenter; on the built-in world, score it against held-out exact masks."""
    input:
        PATHS.segmenter_labels,
    output:
        model=PATHS.segmenter_model,
        metrics=PATHS.segmenter_metrics,
    log:
        PATHS.log("train_segmenter"),
    benchmark:
        PATHS.benchmark("train_segmenter")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("train_segmenter"),
    shell:
        "python -m linkstyle train-segmenter --config {params.resolved} --threads {threads} > {log} 2>&1"
