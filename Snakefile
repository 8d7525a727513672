# linkstyle: the Linking-in-Style pipeline.
#   snakemake -n                          # dry-run on config/config.yaml (the built-in world)
#   snakemake --cores 2                   # run it; results in results/<run>/
#   snakemake --configfile my.yaml ...    # another config (validated before any job starts)
from snakemake.utils import min_version

min_version("9.0")


# The defaults; --configfile FILE adds to and overrides them.
configfile: f"{workflow.basedir}/config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/classifiers.smk"
include: "workflow/rules/samples.smk"
include: "workflow/rules/link.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/units.smk"
include: "workflow/rules/counterfactual.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        PATHS.report,
        PATHS.summary,
        [PATHS.figure(name, suffix) for name, *_ in FIGURES for suffix in (".png", ".pdf")],
        PATHS.atlas,
    default_target: True
