rule report:
    """Figures (PNG and PDF), report.html and summary.json for the whole run, from the artifacts alone."""
    input:
        report_input_files,
    output:
        report=PATHS.report,
        summary=PATHS.summary,
        figures=figure_outputs(),
        pdfs=[PATHS.figure(name, ".pdf") for name, *_ in FIGURES],
    log:
        PATHS.log("report"),
    benchmark:
        PATHS.benchmark("report")
    conda:
        "../../envs/linkstyle.yaml"
    threads: 1
    params:
        resolved=CONFIG,
        config=digest("report"),
    shell:
        stage_shell("report")
