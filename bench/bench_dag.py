"""How long Snakemake takes to plan each paper preset, and how many jobs and SLURM jobs it plans.

Usage (from the repo root)::

    .venv/bin/python bench/bench_dag.py [--repeats 3] [--json bench/measurements/dag.json]

For each preset: the wall time of ``snakemake -n --profile profiles/slurm`` (best of
``--repeats``; no weights are needed to plan), the number of rule jobs, and the number of
SLURM submissions once the profile's groups (sample+extract, select+link) are formed.
The target is at most 10 s for the largest preset.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "config" / "presets").glob("paper-*.yaml"))


def plan(preset: Path, workdir: Path) -> tuple[float, str]:
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [str(snakemake), "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(preset), "--profile", str(REPO / "profiles" / "slurm")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dry-run of {preset.name} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def count(out: str) -> dict[str, object]:
    """Rule jobs from the job-stats table; submissions = ungrouped jobs + distinct group jobs."""
    rules: Counter[str] = Counter()
    table = out.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        rules[parts[0]] = int(parts[1])
    groups = set(re.findall(r"^\s*group: (\S+)", out, flags=re.M))
    grouped_rules = {"sample", "extract", "select", "link"}
    ungrouped = sum(n for r, n in rules.items() if r not in grouped_rules and r not in ("total", "all"))  # all: a target, never submitted
    group_jobs = len(re.findall(r"Group job \S+ \(jobs in lexicogr. order\)", out)) or len(groups)
    return {"jobs": rules.get("total", sum(rules.values())), "rules": dict(rules), "slurm_submissions": ungrouped + group_jobs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            best, out = min((plan(preset, Path(tmp)) for _ in range(args.repeats)), key=lambda t: t[0])
            row = {"preset": preset.stem, "dry_run_seconds": round(best, 2), **count(out)}
            rows.append(row)
            print(f"{row['preset']:12s} {row['dry_run_seconds']:5.2f} s  {row['jobs']:4d} jobs  "
                  f"{row['slurm_submissions']:4d} SLURM submissions  {row['rules']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
