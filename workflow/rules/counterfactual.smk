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
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("counterfactual"),
    shell:
        "python -m linkstyle counterfactual --config {params.resolved} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"


rule actmax:
    """Activation maximisation of the report's units: the baseline the linking sweeps are compared with (GPU-bound: back-propagates); and their sweeps along every direction."""
    input:
        PATHS.selectivity_units("{clf}"),
        PATHS.select_arrays("{clf}"),
        PATHS.link_model("{clf}"),
    output:
        table=PATHS.actmax_table("{clf}"),
        arrays=PATHS.actmax_arrays("{clf}"),
    log:
        PATHS.log("actmax", "{clf}"),
    benchmark:
        PATHS.benchmark("actmax", "{clf}")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("actmax"),
    shell:
        "python -m linkstyle actmax --config {params.resolved} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"
