"""The ``tagless`` command: demo, train, eval, data, labels, report, compare."""

from __future__ import annotations

import argparse
import json
import sys

from tagless.errors import TaglessError
from tagless.tables import json_safe


def _cmd_demo(args) -> dict:
    from tagless.demo import run_demo

    return run_demo(out_dir=args.out_dir, epochs=args.epochs, overrides=args.overrides)


MONITOR_COLUMNS = {"knn_top1": "kNN top-1 (%)", "map_class": "mAP@class (%)", "map_sample": "mAP@sample (%)",
                   "pseudo_nmi": "pseudo-label NMI (%)"}
TEST_COLUMNS = {"map_class": "mAP@class", "map_sample": "mAP@sample", "map_small": "mAP small"}


def _cmd_train(args) -> dict:
    from tagless.config import load_config
    from tagless.tables import format_table

    if args.help_config is not None:
        return _help_config(args.help_config)
    if args.config is None:
        raise TaglessError("train needs a CONFIG (a YAML file or a bundled recipe name)")
    from tagless.engine import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    row = {"method": cfg.method.name, "steps": result.steps, "epochs": result.epochs, "final loss": result.final_loss,
           **{MONITOR_COLUMNS.get(k, k): v for k, v in result.monitor.items()},
           **{f"test {TEST_COLUMNS[k]}": v for k, v in result.test.items() if k in TEST_COLUMNS},
           "images/s": result.images_per_s, "wall (s)": result.wall_s}
    print(format_table([row], title=f"tagless train {cfg.name}"))
    print(f"run directory: {result.run_dir}")
    return row | {"run_dir": str(result.run_dir), "test": result.test}


def _help_config(section: str) -> dict:
    from tagless.config import describe_section
    from tagless.tables import format_table

    tables = describe_section(section)
    for title, rows in tables.items():
        print(format_table(rows, ["key", "default", "type", "help"], title=title))
        print()
    return {"sections": tables}


def _cmd_report(args) -> dict:
    from tagless.tables import format_table
    from tagless.report.from_run import report_run

    result = report_run(args.run_dir, device=args.device, embed=args.embed, cams=args.cams)
    if result["results"]:
        print(format_table(result["results"], title=f"evaluation of {args.run_dir}"))
    print(f"report: {result['report']}")
    return result


def _cmd_data(args) -> dict:
    from tagless.data.report import run_data

    return run_data(args.config, args.overrides, args.out)


def _cmd_labels(args) -> dict:
    from tagless.labels import export_labels

    return export_labels(args.run_dir, args.out)


def _cmd_compare(args) -> dict:
    from tagless.compare import load_spec, run_compare

    spec = load_spec(args.config, args.set, args.seeds, args.name)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagless", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--json", action="store_true", help="print one JSON object of the results as the last line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="pre-train MoCo-v2 and SimSiam on digits and print a kNN table")
    p.add_argument("--out-dir", default="runs")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", help="train from a YAML config (or a bundled recipe name)")
    p.add_argument("config", nargs="?", help="a YAML file or a bundled recipe (demo_moco, ...)")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    p.add_argument("--resume", action="store_true", help="continue the run in the run directory")
    p.add_argument("--help-config", metavar="SECTION", nargs="?", const="all",
                   help="print the fields of a config section with defaults and comments (data, views, model, "
                        "method, method.NAME, optim, train; no SECTION: all) and exit")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("report", help="write RUN_DIR/report.html: curves, kNN/linear tables, t-SNE, confusion matrix")
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--embed", action="store_true", help="embed the PNGs in the HTML (one file to share)")
    p.add_argument("--cams", type=int, nargs="+", metavar="I",
                   help="classifier runs: test images (indices) whose class activation maps to draw (default: 0-7)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("data", help="show what tagless reads from a data section: counts, classes, flags, a report")
    p.add_argument("config", nargs="?", help="a run YAML or bundled recipe (default: the default data section)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. data.source=image_folder data.root=DIR")
    p.add_argument("--out", default="data_report.html", help="the HTML report (PNGs beside it); '' for none")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("labels", help="write a self-labelling run's labels as index,path,head_0,... CSV and score them")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="CSV path (default RUN_DIR/labels.csv)")
    p.set_defaults(func=_cmd_labels)

    p = sub.add_parser("compare", help="train the variants of a compare file over seeds: a table (mean +- std), "
                                       "plots and OUT_DIR/NAME/report.html")
    p.add_argument("config", help="a compare YAML (base:, set:, seeds:, metrics:, reference:, variants:) or a bundled one")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides for every run (after each variant's own)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the file's seeds")
    p.add_argument("--name", default=None, help="replace the file's name (the folder under out_dir)")
    p.add_argument("--rerun", action="store_true", help="retrain runs that already have a result")
    p.add_argument("--dry-run", action="store_true", help="validate every run's config, list the runs and exit")
    p.set_defaults(func=_cmd_compare)

    from tagless.eval.commands import add_eval_parser

    add_eval_parser(sub)
    _add_global_flags(parser)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--debug`` work after any subcommand too, where most users type them.
    In subcommands they default to SUPPRESS so that a flag given before the subcommand stays."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
                child.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                   help="print one JSON object of the results as the last line")
                _add_global_flags(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except TaglessError as e:
        if args.debug:
            raise
        print(f"tagless: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tagless: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(json_safe(result), default=str, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
