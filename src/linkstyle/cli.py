"""``linkstyle``: one subcommand per pipeline stage, the same calls the Snakemake rules make.

The stage subcommands are the stage registry's (``registry.STAGES``): each is named as its stage
and rule, takes the wildcards of its stage as options, reads a config file (validated against the
schema first), writes its artifacts atomically under ``<results_dir>/<run>/`` and prints what it
wrote. A stage's older spelling (``train``, ``train-segmenter``, ``label export``) still works.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import BUILTIN_CONFIG, ConfigError, load_config
from .errors import LinkstyleError
from .registry import STAGES, Stage

#: Help of the subcommand groups that older spellings of some stages use (registry.Stage.alias, e.g. ``label export``).
GROUP_HELP = {"label": "Export images to label for the part segmenter, or import the label maps (the same as label_export "
                       "and label_import; docs/segmentation.md)."}


def _parse_override(text: str) -> dict[str, Any]:
    """``a.b=value`` -> {'a': {'b': value}}, value parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE (dotted keys for nesting), got '{text}'")
    key, value = text.split("=", 1)
    node: dict[str, Any] = {}
    root = node
    parts = key.split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = yaml.safe_load(value)
    return root


def _merge_all(items: list[dict[str, Any]]) -> dict[str, Any]:
    from .config import deep_merge

    out: dict[str, Any] = {}
    for item in items:
        out = deep_merge(out, item)
    return out


def overrides_from(settings: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` strings -> one nested override mapping (later keys win)."""
    return _merge_all([_parse_override(s) for s in settings])


def config_files(given: list[str] | None) -> list[Path]:
    """The files a command's config is merged from: those given, else the built-in world (as the workflow)."""
    if given:
        return [Path(p) for p in given]
    return [BUILTIN_CONFIG] if BUILTIN_CONFIG.exists() else []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linkstyle",
        description=(
            "Linking in Style: link a classifier's penultimate features r to a generator's latent w, "
            "sweep every unit, render, and measure what changes. Each subcommand is one stage of the "
            "Snakemake workflow; run the whole pipeline with `snakemake` (see README)."
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", action="append", default=None, metavar="FILE",
                        help="YAML config; repeat to merge several in order, as Snakemake's --configfile "
                        "(default: the built-in world, config/config.yaml). Keys no file sets take the schema's defaults.")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set tune.n_steps=5 (repeatable)")
    common.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")
    # Only the commands that run networks take a thread count.
    working = argparse.ArgumentParser(add_help=False, parents=[common])
    working.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: config 'threads')")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_stages(sub, working)
    p = sub.add_parser("config", parents=[common], help="Validate a config and print it with every default filled in.",
                       description="Validate a config and print it with every default filled in.")
    p = sub.add_parser("doctor", parents=[common],
                       help="List every file the config needs, whether it is present, and where it comes from.",
                       description="List every file the config needs (generator pickle and checkout, classifier weights), "
                       "whether each is present and valid, and where the official one comes from. Fetches nothing; "
                       "exits 1 if a required file is missing.")
    p = sub.add_parser("convert-stylegan", help="Keep only G_ema of a StyleGAN pickle (for pickles whose discriminator will not load).",
                       description="Rewrite a StyleGAN network pickle with only its generator (G_ema), so that it loads "
                       "without the discriminator's dependencies. Run it where the official loader works.")
    p.add_argument("input", help="the official network pickle")
    p.add_argument("output", help="where to write the G_ema-only pickle")
    p.add_argument("--repo", required=True, help="local checkout of the official repository")
    p = sub.add_parser("units", parents=[common], help="Print each classifier's unit count and unit shards.",
                       description="Print each classifier's unit count and unit shards.")
    return parser


def _add_stages(sub: Any, working: argparse.ArgumentParser) -> None:
    """One subcommand per stage, with its wildcards as required options; an alias of one word is an
    alias of the subcommand, one of two words (``label export``) an action of a subcommand group."""

    def add(parsers: Any, name: str, stage: Stage, aliases: list[str]) -> None:
        p = parsers.add_parser(name, aliases=aliases, parents=[working], help=stage.help, description=stage.help)
        for arg, typ, arg_help in stage.wildcards:
            p.add_argument(f"--{arg}", type=typ, required=True, help=arg_help)
        p.set_defaults(stage=stage.name)

    grouped: dict[str, list[tuple[str, Stage]]] = {}
    for stage in STAGES.values():
        group, _, action = (stage.alias or "").partition(" ")
        if action:
            grouped.setdefault(group, []).append((action, stage))
        add(sub, stage.name, stage, [stage.alias] if stage.alias and not action else [])
    for group, actions in grouped.items():
        p = sub.add_parser(group, help=GROUP_HELP[group], description=GROUP_HELP[group])
        group_sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
        for action, stage in actions:
            add(group_sub, action, stage, [])


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "convert-stylegan":
        from .generators.stylegan import convert_stylegan

        print(f"wrote {convert_stylegan(args.input, args.output, args.repo)}")
        return
    cfg = load_config(config_files(args.config), overrides_from(args.set))
    if args.command == "config":
        sys.stdout.write(yaml.safe_dump(cfg.raw, sort_keys=False))
        return
    if args.command == "doctor":
        from .doctor import assets, missing, report

        items = assets(cfg, deep=True)
        print(report(items))
        if missing(items):
            print(f"{len(missing(items))} required file(s) missing or invalid", file=sys.stderr)
            raise SystemExit(1)
        return
    if args.command == "units":
        from .units import unit_count, unit_shards

        for clf in cfg.classifiers:
            shards = unit_shards(cfg, clf.name)
            print(f"{clf.name}: {unit_count(cfg, clf.name)} units, {sum(map(len, shards))} analysed in {len(shards)} shards")
        return
    from .stages import run_stage

    stage = STAGES[args.stage]
    wildcards = [getattr(args, arg) for arg, _, _ in stage.wildcards]
    if getattr(args, "classifier", None) is not None:
        cfg.classifier(args.classifier)  # unknown names fail here, listing the configured ones
    run_stage(cfg, stage.name, *wildcards, threads=args.threads)


def _missing(exc: FileNotFoundError) -> str:
    """Bare 'no such file' errors from readers become a hint about the stage that makes the file."""
    text = str(exc)
    path = exc.filename or (text if " " not in text.strip() else None)
    if path is None:
        return text
    return f"missing input {path}; an earlier stage makes it: run `snakemake {path}` (or the whole workflow)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Expected failures (config, artifacts, weights, full or read-only disks) are one message and exit
    # status 2; anything else is a bug and keeps its traceback.
    command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
    try:
        _dispatch(args)
    except LinkstyleError as exc:
        print(f"linkstyle {command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"linkstyle {command}: error: {_missing(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        from .io import USER_ERRNOS, os_error_message

        if exc.errno not in USER_ERRNOS:
            raise
        print(f"linkstyle {command}: error: {os_error_message(exc, action='read or write')}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
