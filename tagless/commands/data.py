"""``tagless data [CONFIG] [key=value ...]``: print what tagless reads from a data section
(counts per split, classes, labels per image, object sizes, flags with their fixes) and write
the HTML report with sample images."""

from __future__ import annotations

from pathlib import Path

from tagless.tables import format_table


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="show what tagless reads from a data section: counts, classes, flags, a report")
    p.add_argument("config", nargs="?", help="a run YAML or bundled recipe (default: the default data section)")
    p.add_argument("overrides", nargs="*",
                   help="dotted key=value overrides, e.g. data.source=image_folder data.root=DIR")
    p.add_argument("--out", default="data_report.html", help="the HTML report (PNGs beside it); '' for none")
    p.set_defaults(func=run)


def run(args) -> dict:
    return run_data(args.config, args.overrides, args.out)


def print_facts(facts: dict, report: Path | None) -> None:
    from tagless.data.summary import class_rows, facts_header

    print(f"tagless data: {facts_header(facts)}")
    rows = []
    for split, f in facts["splits"].items():
        row = {"split": split, "images": f["images"]}
        if "labels_per_image" in f:
            row["labels / image"] = f["labels_per_image"]["mean"]
            row["unknown (%)"] = 100 * f["unknown_share"]
        if "unlabelled" in f:
            row["unlabelled"] = f["unlabelled"]
        if "boxes_per_image" in f:
            row["boxes / image"] = f["boxes_per_image"]["mean"]
            row.update({f"objects {k}": v for k, v in f.get("object_sizes", {}).items()})
        row["skipped"] = len(f.get("skipped", []))
        if f.get("error"):
            row["error"] = f["error"]
        rows.append(row)
    print(format_table(rows))
    print(format_table(class_rows(facts), title="images per class (positives for multi-label data)"))
    for split, f in facts["splits"].items():
        if "labels_per_image" in f:
            hist = ", ".join(f"{k}: {v}" for k, v in f["labels_per_image"]["histogram"].items())
            print(f"labels per image ({split}): {hist}")
        for path in f.get("skipped", []):
            print(f"skipped ({split}): {path}")
    for note in facts["notes"]:
        print(f"note: {note}")
    for fl in facts["flags"]:
        print(f"FLAG: {fl['flag']}\n      fix: {fl['fix']}")
    if not facts["flags"]:
        print("no flags: nothing suspicious found")
    cache = facts["cache"]
    if cache["entries"]:
        print(f"cache: {', '.join(cache['entries'])} ({cache['bytes'] / 2**20:.1f} MB)")
    if report is not None:
        print(f"report: {report}")


def run_data(config: str | None, overrides: list[str], out: str) -> dict:
    from tagless.data.summary import data_facts
    from tagless.engine.run_config import load_config
    from tagless.report.data_report import write_data_report

    if config and "=" in config:  # `tagless data data.source=...`: no config, overrides only
        config, overrides = None, [config, *overrides]
    cfg = load_config(config, overrides).data
    facts, datasets = data_facts(cfg)
    report = write_data_report(facts, datasets, Path(out)) if out else None
    print_facts(facts, report)
    return facts | ({"report": str(report)} if report else {})
