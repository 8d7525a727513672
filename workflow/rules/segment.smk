# The few-shot part segmenter (measure.segmenter: learned); docs/segmentation.md.


def user_label_maps(wildcards=None):
    """The annotator's PNG label maps: a change to any of them reruns the import."""
    if not CFG.segmentation.labels:
        return []
    return sorted(str(p) for p in Path(CFG.segmentation.labels).glob("*.png"))


rule label_export:
    """Render the images to label (and, on the built-in world, their exact masks)."""
    output:
        manifest=PATHS.label_manifest,
        latents=PATHS.label_latents,
    params:
        config=digest("label_export"),
    log:
        PATHS.log("label_export"),
    benchmark:
        PATHS.benchmark("label_export")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} label export --config {CONFIG} --threads {threads} > {log} 2>&1"


rule label_import:
    """Check the label maps against the exported images and measure.parts; pack them for training."""
    input:
        PATHS.label_manifest,
        PATHS.label_latents,
        user_label_maps,
    output:
        PATHS.segmenter_labels,
    params:
        config=digest("label_import"),
    log:
        PATHS.log("label_import"),
    benchmark:
        PATHS.benchmark("label_import")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} label import --config {CONFIG} --threads {threads} > {log} 2>&1"


rule train_segmenter:
    """Train the part segmenter; on the built-in world, score it against held-out exact masks."""
    input:
        PATHS.segmenter_labels,
    output:
        model=PATHS.segmenter_model,
        metrics=PATHS.segmenter_metrics,
    params:
        config=digest("train_segmenter"),
    log:
        PATHS.log("train_segmenter"),
    benchmark:
        PATHS.benchmark("train_segmenter")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} train-segmenter --config {CONFIG} --threads {threads} > {log} 2>&1"
