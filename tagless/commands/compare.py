"""``tagless compare CONFIG``: train the variants of a compare file over seeds, print the
table (mean +- std, differences with their seed-noise verdict), write the report."""

from __future__ import annotations

import json
import sys

from tagless.errors import TaglessError
from tagless.tables import json_safe


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="train the variants of a compare file over seeds: a table (mean +- std), "
                                       "plots and OUT_DIR/NAME/report.html")
    p.add_argument("config",
                   help="a compare YAML (base:, set:, seeds:, metrics:, reference:, variants:) or a bundled one")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides for every run (after each variant's own)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the file's seeds")
    p.add_argument("--name", default=None, help="replace the file's name (the folder under out_dir)")
    p.add_argument("--sweep", nargs="+", action="extend", default=None, metavar="KEY=V1,V2",
                   help="replace the file's sweep for every variant (a smaller grid on a small budget); "
                        "'none' for no sweep")
    p.add_argument("--only", nargs="+", action="extend", default=None, metavar="VARIANT",
                   help="run only these variants (and the file's reference)")
    p.add_argument("--rerun", action="store_true", help="retrain runs that already have a result")
    p.add_argument("--dry-run", action="store_true", help="validate every run's config, list the runs and exit")
    p.set_defaults(func=run)


def run(args) -> dict:
    from tagless.compare import load_spec, run_compare

    spec = load_spec(args.config, args.set, args.seeds, args.name, sweep=args.sweep, only=args.only)
    try:
        result = run_compare(spec, rerun=args.rerun, dry_run=args.dry_run)
    except KeyboardInterrupt:
        print("tagless compare: run the same command again to continue (finished runs are reused)", file=sys.stderr)
        raise
    if result["failed"]:  # the table and the JSON line stand; the exit status says a run failed
        if args.json:
            print(json.dumps(json_safe(result), default=str, allow_nan=False))
        first = result["failed"][0]
        raise TaglessError(f"{len(result['failed'])} of {len(result['runs'])} runs failed (first: {first['variant']} "
                           f"seed {first['seed']}: {first['error']}); run the command again to retry them")
    return result
