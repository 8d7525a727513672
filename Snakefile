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


# One rule file per stage, named as the stage and its rule: workflow/rules/<stage>.smk (registry.STAGES).
for _stage in STAGES:

    include: f"workflow/rules/{_stage}.smk"


rule all:
    default_target: True
    input:
        PATHS.report,
        PATHS.summary,
        [PATHS.figure(name, suffix) for name, *_ in FIGURES for suffix in (".png", ".pdf")],
        PATHS.atlas,
