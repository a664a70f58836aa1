"""``tagless labels RUN_DIR``: a self-labelling run's per-image labels as a CSV
(``index,path,head_0,...``), scored against the true labels when the data has them."""

from __future__ import annotations

from pathlib import Path

from tagless.commands.report import add_data_options
from tagless.files import atomic_path
from tagless.tables import format_table


def add_parser(sub) -> None:
    p = sub.add_parser("labels", help="write a self-labelling run's labels as index,path,head_0,... CSV and score them")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="CSV path (default RUN_DIR/labels.csv)")
    add_data_options(p)
    p.set_defaults(func=run)


def run(args) -> dict:
    return export_labels(args.run_dir, args.out, args.data, args.data_overrides)


def export_labels(run_dir: str | Path, out: str | Path | None = None, data_path: str | None = None,
                  data_overrides: list[str] = ()) -> dict:
    """Write ``index,path,head_0,...`` (default RUN_DIR/labels.csv, atomically); returns the file
    and the per-head scores. ``data_path`` / ``data_overrides``: other data than the
    checkpoint's data section (the run's training images, in the same order)."""
    from tagless.engine.loaded_run import load_run
    from tagless.methods.sela_labels import label_scores, write_labels_csv

    run = load_run(run_dir, data_path=data_path, data_overrides=list(data_overrides))
    labels, _ = run.self_labels()
    train = run.split("train")
    path = Path(out or run.run_dir / "labels.csv")
    with atomic_path(path) as tmp:
        write_labels_csv(tmp, labels, train.paths)
    rows = label_scores(labels, train.targets, train.label_kind)
    print(format_table(rows, title=f"self-labels of {run.run_dir} ({labels.shape[1]} images, "
                                   f"{len(rows)} heads; nmi/anmi/ari against the true labels, x100)"))
    print(f"labels: {path}")
    return {"file": str(path), "images": int(labels.shape[1]), "heads": rows}
