# linkstyle: the Linking-in-Style pipeline.
#   snakemake -n                          # dry-run on config/config.yaml (the built-in world)
#   snakemake --cores 2                   # run it; results in results/<run>/
#   snakemake --configfile my.yaml ...    # another config instead (validated before any job starts)
from snakemake.utils import min_version

min_version("9.0")


# Without --configfile: the built-in world. A --configfile replaces it (several merge in order) and
# keys no file sets take the schema's defaults, so a preset never inherits the built-in world's
# settings; `linkstyle config -c FILE` prints the same merge (docs: config/README.md).
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


# `snakemake --report`: this text opens it; every figure carries its own caption.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train_classifier.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/link.smk"
include: "workflow/rules/label_export.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/counterfactual.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        PATHS.report,
        PATHS.summary,
        [PATHS.figure(name, suffix) for name, *_ in FIGURES for suffix in (".png", ".pdf")],
        PATHS.atlas,
