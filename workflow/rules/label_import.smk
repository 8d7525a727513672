# The few-shot part segmenter (measure.segmenter: learned); docs/segmentation.md.


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
        stage_shell("label_import")
