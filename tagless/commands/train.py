"""``tagless train CONFIG [key=value ...]``: train one run and print its summary row;
``--help-config SECTION`` prints a config section's fields instead."""

from __future__ import annotations

from tagless.errors import TaglessError
from tagless.tables import format_table

MONITOR_COLUMNS = {"knn_top1": "kNN top-1 (%)", "map_class": "mAP@class (%)", "map_sample": "mAP@sample (%)",
                   "pseudo_nmi": "pseudo-label NMI (%)"}
TEST_COLUMNS = {"map_class": "mAP@class", "map_sample": "mAP@sample", "map_small": "mAP small"}


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train from a YAML config (or a bundled recipe name)")
    p.add_argument("config", nargs="?", help="a YAML file or a bundled recipe (demo_moco, ...)")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    p.add_argument("--resume", action="store_true", help="continue the run in the run directory")
    p.add_argument("--help-config", metavar="SECTION", nargs="?", const="all",
                   help="print the fields of a config section with defaults and comments (data, views, model, "
                        "method, method.NAME, labels, loss, optim, train, probe; no SECTION: all) and exit")
    p.set_defaults(func=run)


def run(args) -> dict:
    if args.help_config is not None:
        return help_config(args.help_config)
    if args.config is None:
        raise TaglessError("train needs a CONFIG (a YAML file or a bundled recipe name)")
    from tagless.engine import train
    from tagless.engine.run_config import load_config

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    row = {"method": cfg.method.name, "steps": result.steps, "epochs": result.epochs, "final loss": result.final_loss,
           **{MONITOR_COLUMNS.get(k, k): v for k, v in result.monitor.items()},
           **{f"test {TEST_COLUMNS[k]}": v for k, v in result.test.items() if k in TEST_COLUMNS},
           "images/s": result.images_per_s, "wall (s)": result.wall_s}
    if result.selection:
        row["selected epoch"] = result.selection["epoch"]
    print(format_table([row], title=f"tagless train {cfg.name}"))
    if result.selection:
        sel = result.selection
        print(f"best.pt: epoch {sel['epoch']}, chosen by validation {sel['metric']} {sel['value']:.2f} "
              f"(the test numbers above are this epoch's)")
    print(f"run directory: {result.run_dir}")
    return row | {"run_dir": str(result.run_dir), "test": result.test, "selection": result.selection}


def help_config(section: str) -> dict:
    from tagless.engine.run_config import describe_section

    tables = describe_section(section)
    for title, rows in tables.items():
        print(format_table(rows, ["key", "default", "type", "help"], title=title))
        print()
    return {"sections": tables}
