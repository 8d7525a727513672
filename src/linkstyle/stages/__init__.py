"""Pipeline stages: each is a function of (config, wildcards) that writes its artifacts atomically.

The Snakemake rules and the CLI call these and nothing else.
"""
