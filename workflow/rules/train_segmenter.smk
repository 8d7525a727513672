# The few-shot part segmenter (measure.segmenter: learned); docs/segmentation.md.


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
        stage_shell("train_segmenter")
