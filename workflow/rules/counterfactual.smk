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
    params:
        config=digest("counterfactual"),
    log:
        PATHS.log("counterfactual", "{clf}"),
    benchmark:
        PATHS.benchmark("counterfactual", "{clf}")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} counterfactual --config {CONFIG} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"


rule actmax:
    """Activation maximisation of the report's units: the baseline the linking sweeps are compared with (GPU-bound: back-propagates); and their sweeps along every direction."""
    input:
        PATHS.selectivity_units("{clf}"),
        PATHS.select_arrays("{clf}"),
        PATHS.link_model("{clf}"),
    output:
        table=PATHS.actmax_table("{clf}"),
        arrays=PATHS.actmax_arrays("{clf}"),
    params:
        config=digest("actmax"),
    log:
        PATHS.log("actmax", "{clf}"),
    benchmark:
        PATHS.benchmark("actmax", "{clf}")
    threads: 1
    conda:
        "../../envs/linkstyle.yaml"
    shell:
        "{STAGE} actmax --config {CONFIG} --threads {threads} --classifier {wildcards.clf} > {log} 2>&1"
