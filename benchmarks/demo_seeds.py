"""The demo's tables over several seeds: is every trained row ahead of its random init beyond
seed noise (the bar the demo must meet)?

Runs ``tagless demo seed=S`` for each seed (every row of both tables at that seed: the
pre-training, the random-init backbone, the untrained classifier) and prints, per row and
column, mean +- std over seeds and the difference from the table's random-init row with its
verdict (beyond noise when it exceeds 2 standard errors of the difference).

    python benchmarks/demo_seeds.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from tagless.commands.demo import run_demo
from tagless.compare import mean_difference
from tagless.device import device_name
from tagless.tables import format_table

TABLES = {  # table key -> (row label column, the random-init row, the columns judged)
    "rows": ("features", "random init", ("kNN top-1 (%)", "linear top-1 (%)", "k-means NMI (%)")),
    "single_positive_rows": ("classifier", "untrained (random init)", ("mAP@class (%)", "mAP@sample (%)")),
}


def summarise(per_seed: list[dict], table: str) -> list[dict]:
    label, floor, columns = TABLES[table]
    names = [r[label] for r in per_seed[0][table]]
    floor_name = next(n for n in names if n.startswith(floor))
    value = lambda name, col: [r[col] for s in per_seed for r in s[table]
                               if r[label] == name and r.get(col) is not None]
    out = []
    for name in names:
        row = {label: name}
        for col in columns:
            v = torch.tensor(value(name, col), dtype=torch.float64)
            if not len(v):
                continue
            row[col] = f"{v.mean():.1f} +- {v.std():.1f}" if len(v) > 1 else f"{v[0]:.1f}"
            if name != floor_name and not name.startswith("raw"):
                diff, _, verdict = mean_difference(value(name, col), value(floor_name, col))
                row[f"{col} vs random init"] = f"{diff:+.1f} ({verdict})"
        out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", default="", help="write the per-seed rows here")
    args = p.parse_args()
    per_seed, walls = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            start = time.perf_counter()
            per_seed.append(run_demo(out_dir=str(Path(tmp) / f"s{seed}"), overrides=[f"seed={seed}"], progress=False))
            walls.append(time.perf_counter() - start)
            if args.json:
                Path(args.json).write_text(json.dumps(per_seed, indent=2, default=str))
    print(f"\ndevice: {device_name(torch.device('cpu'))}; seeds {args.seeds}; demo wall time per seed (s): "
          + ", ".join(f"{w:.0f}" for w in walls))
    for table in TABLES:
        print(format_table(summarise(per_seed, table), title=f"{table}: mean +- std over seeds, difference from the "
                                                              f"random-init row (beyond noise: > 2 standard errors)"))


if __name__ == "__main__":
    main()
