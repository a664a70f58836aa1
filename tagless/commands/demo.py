"""``tagless demo``: pre-train MoCo-v2, SimSiam and SeLa on digits without labels, then compare
the frozen backbone with the same backbone at random init and with raw pixels, by weighted kNN,
a linear probe and k-means NMI (and SeLa's own labels by NMI); then MoCo-v2 against MLS on
multi-digit scenes, by the multi-label linear probe (paper 000's protocol); then multi-label
classifiers trained from single positive labels (AN, EN+SCL, two-way); and write each
run's report."""

from __future__ import annotations

import time

from tagless.engine import train
from tagless.engine.baselines import baseline_rows
from tagless.engine.run_config import load_config
from tagless.eval.scoring import score_multilabel, score_single_label
from tagless.report.from_run import report_run
from tagless.tables import format_table

DEMO_CONFIGS = ("demo_moco", "demo_simsiam", "sela_digits")
# Shorter than the recipes, so that the whole demo stays within 5 minutes on 2 CPU cores.
DEMO_EPOCHS = {"demo_moco": 20, "demo_simsiam": 15, "sela_digits": 30}
COLUMNS = ["features", "kNN top-1 (%)", "linear top-1 (%)", "k-means NMI (%)", "self-label NMI (%)", "final loss",
           "images/s", "wall (s)"]
# Multi-label self-supervision on digit scenes: the bundled recipes, shortened for the demo.
SCENE_CONFIGS = ("moco_scenes", "mls_scenes")
SCENE_SIZE = ["data.scene_count=1000", "train.epochs=4"]
SCENE_COLUMNS = ["features", "mAP@class (%)", "mAP@sample (%)", "final loss", "images/s", "wall (s)"]
# Multi-label classifiers from single positive labels (paper 003): AN against EN+SCL and the
# two-way loss (paper 001) with unknown labels taken as negatives, on digit scenes.
SP_CONFIG = "multilabel_scenes"
SP_SIZE = ["train.epochs=5", "train.knn_every_epochs=0", "labels.mode=single_positive"]
SP_RUNS = (("AN", ["loss.name=an"]), ("EN+SCL", ["loss.name=en_scl", "loss.warmup_epochs=2"]),
           ("two-way", ["loss.name=two_way", "loss.unknown=negative"]))
SP_COLUMNS = ["loss", "mAP@class (%)", "mAP@sample (%)", "mAP small (%)", "confident classes / image", "wall (s)"]


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="pre-train MoCo-v2 and SimSiam on digits and print a kNN table")
    p.add_argument("--out-dir", default="runs")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    p.set_defaults(func=run)


def run(args) -> dict:
    return run_demo(out_dir=args.out_dir, epochs=args.epochs, overrides=args.overrides)


def from_rows(rows: list[dict]) -> dict:
    """The demo's columns from the scorer's rows (kNN, linear, k-means)."""
    knn, linear, clusters = rows
    return {"kNN top-1 (%)": knn["top-1 (%)"], "linear top-1 (%)": linear["top-1 (%)"],
            "k-means NMI (%)": clusters["NMI (%)"]}


def score_features(x_train, y_train, x_test, y_test, k: int, temperature: float) -> dict:
    """Weighted kNN top-1, L-BFGS linear-probe top-1 and k-means NMI, as the run reports compute them."""
    rows, _ = score_single_label(x_train, y_train, x_test, y_test, k, temperature)
    return from_rows(rows)


def score_multilabel_probe(x_train, y_train, x_test, y_test) -> dict:
    """mAP@class and mAP@sample of the one-vs-rest linear probe, as the run reports compute them."""
    return {k: v for k, v in score_multilabel(x_train, y_train, x_test, y_test)[0][0].items() if k != "evaluation"}


def baselines(cfg, score=None) -> list[dict]:
    """Raw pixels and the untrained backbone (the same init seed as the pre-trained runs),
    scored by ``score(x_train, y_train, x_test, y_test)`` (default: the single-label scores)."""
    k, t = cfg.train.knn_k, cfg.train.knn_temperature
    return baseline_rows(cfg, score or (lambda a, b, c, d: score_features(a, b, c, d, k, t)))


def _overrides_for(config_name: str, overrides) -> list[str]:
    """The overrides that apply to one demo recipe: ``method.KEY=...`` only where that recipe's
    method has KEY (``method.queue_size`` tunes MoCo and leaves SimSiam alone)."""
    from dataclasses import fields

    from tagless import config_io
    from tagless.engine.run_config import resolve_config_path
    from tagless.methods import METHODS

    name = config_io.read_yaml(resolve_config_path(config_name)).get("method", {}).get("name", "moco")
    own = {f.name for f in fields(METHODS[name].Config)}
    keep = []
    for text in overrides:
        path, _ = config_io.parse_override(text)
        if path[0] != "method" or len(path) != 2 or path[1] in own:
            keep.append(text)
    return keep


def _pretrain(names, size, out_dir, stamp, epochs, overrides, progress, row_of):
    """Train and report each recipe; returns (rows, run dirs, the last config)."""
    rows, run_dirs, cfg = [], [], None
    for name in names:
        length = epochs or DEMO_EPOCHS.get(name)
        extra = [*size, f"out_dir={out_dir}", f"name={name}-{stamp}"] + ([f"train.epochs={length}"] if length else [])
        cfg = load_config(name, [*extra, *_overrides_for(name, overrides)])
        print(f"pre-training {cfg.method.name} on {cfg.data.source} for {cfg.train.epochs} epochs "
              f"-> {cfg.run_dir}", flush=True)
        result = train(cfg, progress=progress)
        report = report_run(result.run_dir, k=cfg.train.knn_k, temperature=cfg.train.knn_temperature)
        rows.append({"features": f"{cfg.method.name} pre-trained", **row_of(report["results"], result),
                     "final loss": result.final_loss, "images/s": result.images_per_s, "wall (s)": result.wall_s})
        run_dirs.append((str(result.run_dir), report["report"]))
    return rows, run_dirs, cfg


def single_positive_rows(out_dir, stamp, epochs, overrides, progress) -> tuple[list[dict], list[str], object]:
    """Train the SP_RUNS classifiers; rows of their test numbers and the winner's gain over AN."""
    rows, run_dirs, cfg = [], [], None
    for loss, extra in SP_RUNS:
        name = f"sp_{extra[0].split('=')[1]}-{stamp}"
        cfg = load_config(SP_CONFIG, [*SP_SIZE, *extra, f"out_dir={out_dir}", f"name={name}"]
                          + ([f"train.epochs={epochs}"] if epochs else []) + _overrides_for(SP_CONFIG, overrides))
        print(f"training a {cfg.loss.name} classifier on {cfg.data.source} ({cfg.labels.mode} labels) for "
              f"{cfg.train.epochs} epochs -> {cfg.run_dir}", flush=True)
        result = train(cfg, progress=progress)
        t = result.test
        rows.append({"loss": loss, "mAP@class (%)": t.get("map_class"), "mAP@sample (%)": t.get("map_sample"),
                     "mAP small (%)": t.get("map_small"), "confident classes / image": t.get("confident_per_image"),
                     "wall (s)": result.wall_s})
        run_dirs.append(str(result.run_dir))
    best = max(rows[1:], key=lambda r: r["mAP@class (%)"])
    best["loss"] += f" (best: {best['mAP@class (%)'] - rows[0]['mAP@class (%)']:+.1f} vs AN)"
    return rows, run_dirs, cfg


def run_demo(out_dir: str = "runs", epochs: int | None = None, overrides: list[str] = (),
             progress: bool = True) -> dict:
    """Train every demo config, write reports, print the tables; returns rows and run dirs."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows, run_dirs, cfg = _pretrain(DEMO_CONFIGS, [], out_dir, stamp, epochs, overrides, progress,
                                    lambda res, r: {**from_rows(res),
                                                    "self-label NMI (%)": r.monitor.get("pseudo_nmi")})
    rows = baselines(cfg) + rows
    scene_rows, scene_dirs, scene_cfg = _pretrain(SCENE_CONFIGS, SCENE_SIZE, out_dir, stamp, epochs, overrides,
                                                  progress,
                                                  lambda res, r: {k: v for k, v in res[0].items() if k != "evaluation"})
    scene_rows = baselines(scene_cfg, score_multilabel_probe) + scene_rows
    sp_rows, sp_dirs, sp_cfg = single_positive_rows(out_dir, stamp, epochs, overrides, progress)
    k, t = cfg.train.knn_k, cfg.train.knn_temperature
    print()
    print(format_table(rows, COLUMNS, title=f"tagless demo: {cfg.data.source} "
                                             f"({cfg.data.image_size} px), held-out split; "
                                             f"weighted kNN k={k} T={t}; L-BFGS linear probe, L2 chosen on val; "
                                             f"k-means (k = classes) of the held-out features; SeLa's own labels "
                                             f"(head 0) on the training split"))
    print()
    print(format_table(scene_rows, SCENE_COLUMNS, title=f"multi-label: {scene_cfg.data.source} "
                                                        f"({scene_cfg.data.image_size} px, "
                                                        f"1-4 digits each), held-out split; one-vs-rest L-BFGS linear "
                                                        f"probe of the frozen backbone, L2 chosen on val"))
    print()
    print(format_table(sp_rows, SP_COLUMNS, title=f"single positive labels: {sp_cfg.data.source} "
                                                  f"(one observed positive per training image, the rest unknown); "
                                                  f"the model's own classifier on the held-out split (clean labels)"))
    print()
    for run_dir, report in run_dirs + scene_dirs:
        print(f"run directory: {run_dir}  (report: {report})")
    for run_dir in sp_dirs:
        print(f"run directory: {run_dir}  (report: tagless report {run_dir})")
    return {"rows": rows, "scene_rows": scene_rows, "single_positive_rows": sp_rows,
            "run_dirs": [d for d, _ in run_dirs + scene_dirs] + sp_dirs}
