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
    # See selectivity: the end of the run waits for it.
    priority: 2
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("actmax"),
    shell:
        stage_shell("actmax")
