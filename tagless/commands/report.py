"""``tagless report RUN_DIR``: evaluate a run's last checkpoint and write its report.html."""

from __future__ import annotations

from tagless.tables import format_table


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write RUN_DIR/report.html: curves, kNN/linear tables, t-SNE, confusion matrix")
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--embed", action="store_true", help="embed the PNGs in the HTML (one file to share)")
    p.add_argument("--cams", type=int, nargs="+", metavar="I",
                   help="classifier runs: test images (indices) whose class activation maps to draw (default: 0-7)")
    add_data_options(p)
    p.set_defaults(func=run)


def add_data_options(p) -> None:
    """``--data`` / ``--set``: the data a command rebuilds from a checkpoint, instead of (or
    amending) the data section stored in it (as ``tagless eval``)."""
    p.add_argument("--data", default=None,
                   help="run-config YAML or bundled recipe whose data section to read (default: the checkpoint's)")
    p.add_argument("--set", dest="data_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a data field, e.g. --set root=/data/cifar-10-batches-py")


def run(args) -> dict:
    from tagless.report.from_run import report_run

    result = report_run(args.run_dir, device=args.device, embed=args.embed, cams=args.cams, data_path=args.data,
                        data_overrides=args.data_overrides)
    if result["results"]:
        print(format_table(result["results"], title=f"evaluation of {args.run_dir}"))
    print(f"report: {result['report']}")
    return result
