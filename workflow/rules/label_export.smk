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
        stage_shell("label_export")
