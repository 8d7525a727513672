rule counterfactual:
    """Shifts of r that make the rendered image change class, for every configured class pair (GPU-bound: renders)."""
    input:
        PATHS.select_table("{clf}"),
        PATHS.select_arrays("{clf}"),
        PATHS.link_model("{clf}"),
    output:
        table=PATHS.counterfactual_items("{clf}"),
        arrays=PATHS.counterfactual_arrays("{clf}"),
        drivers=PATHS.counterfactual_drivers("{clf}"),
        factors=PATHS.counterfactual_factors("{clf}"),
        metrics=PATHS.counterfactual_metrics("{clf}"),
    log:
        PATHS.log("counterfactual", "{clf}"),
    benchmark:
        PATHS.benchmark("counterfactual", "{clf}")
    # The longest single job: started as soon as it can, so that shorter ones fill in around it.
    priority: 1
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("counterfactual"),
    shell:
        stage_shell("counterfactual")
