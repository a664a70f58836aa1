"""``tagless demo``: pre-train MoCo-v2 and SeLa on digits without labels and compare each frozen
backbone with the same backbone at random init and with raw pixels, by weighted kNN, a linear
probe and k-means NMI (and SeLa's own labels by NMI); then train multi-label classifiers from
single positive labels (AN, EN+SCL) and compare them with the untrained classifier; write each
run's report. Every trained row is ahead of its random init beyond seed noise
(``benchmarks/demo_seeds.py``); the methods that need longer runs than a demo (SimSiam, MLS,
LoGo, SwAV) are in the benchmarks."""

from __future__ import annotations

import time

from tagless.engine import Trainer, train
from tagless.engine.baselines import baseline_rows
from tagless.engine.classifier_eval import score_numbers, test_scores
from tagless.engine.run_config import load_config
from tagless.eval.scoring import score_single_label
from tagless.report.from_run import report_run
from tagless.tables import format_table

# Only methods that beat the random-init backbone beyond seed noise at demo length: MoCo-v2 at
# 20 epochs on digits did not (kNN 88.4 +- 3.0 against 91.6 +- 1.8 over 3 seeds with one queued
# key per image; 96.4 and 90.8 against 93.6 and 90.5 on seeds 0 and 1 with both; BENCHMARKS.md).
DEMO_CONFIGS = ("sela_digits",)
# Shorter than the recipe, so that the whole demo stays within 5 minutes on 2 CPU cores.
DEMO_EPOCHS = {"sela_digits": 30}
COLUMNS = ["features", "kNN top-1 (%)", "linear top-1 (%)", "k-means NMI (%)", "self-label NMI (%)", "final loss",
           "images/s", "wall (s)"]
# Multi-label classifiers from single positive labels (paper 003): the untrained classifier, AN
# (unknown labels taken as negatives) and EN+SCL, trained from scratch on digit scenes with the
# recipe's plain whole-image classifier (Adam 1e-3).
SP_CONFIG = "multilabel_scenes"
SP_SIZE = ["train.epochs=5", "train.knn_every_epochs=0", "labels.mode=single_positive"]
SP_RUNS = (("AN", ["loss.name=an"]), ("EN+SCL", ["loss.name=en_scl", "loss.warmup_epochs=2"]))
SP_COLUMNS = ["classifier", "mAP@class (%)", "mAP@sample (%)", "mAP small (%)", "confident classes / image",
              "wall (s)"]
ELSEWHERE = ("Not in the demo (they need longer runs than a demo allows): MoCo-v2, SimSiam, MLS, LoGo and SwAV "
             "(benchmarks/ssl_scenes_table.py), the loss comparisons (tagless compare single_positive_scenes); "
             "the README has their tables.")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="pre-train SeLa on digits, train single-positive classifiers, print the tables")
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


def _pretrain(names, out_dir, stamp, epochs, overrides, progress):
    """Train and report each recipe; returns (rows, run dirs, the last config)."""
    rows, run_dirs, cfg = [], [], None
    for name in names:
        length = epochs or DEMO_EPOCHS.get(name)
        extra = [f"out_dir={out_dir}", f"name={name}-{stamp}"] + ([f"train.epochs={length}"] if length else [])
        cfg = load_config(name, [*extra, *_overrides_for(name, overrides)])
        print(f"pre-training {cfg.method.name} on {cfg.data.source} for {cfg.train.epochs} epochs "
              f"-> {cfg.run_dir}", flush=True)
        result = train(cfg, progress=progress)
        report = report_run(result.run_dir, k=cfg.train.knn_k, temperature=cfg.train.knn_temperature,
                            announce=False)
        rows.append({"features": f"{cfg.method.name} pre-trained", **from_rows(report["results"]),
                     "self-label NMI (%)": result.monitor.get("pseudo_nmi"), "final loss": result.final_loss,
                     "images/s": result.images_per_s, "wall (s)": result.wall_s})
        run_dirs.append((str(result.run_dir), report["report"]))
    return rows, run_dirs, cfg


def _sp_row(name: str, numbers: dict, wall: float) -> dict:
    return {"classifier": name, "mAP@class (%)": numbers.get("map_class"), "mAP@sample (%)": numbers.get("map_sample"),
            "mAP small (%)": numbers.get("map_small"), "confident classes / image": numbers.get("confident_per_image"),
            "wall (s)": wall}


def untrained_row(cfg) -> dict:
    """The classifier at its random init (the seed the trained rows start from), on the test split."""
    start = time.perf_counter()
    trainer = Trainer(cfg, progress=False)  # the seeded model, untrained (it writes only the label split)
    try:
        scores, targets = test_scores(trainer.method, trainer.test_set, cfg, trainer.device)
        numbers = score_numbers(scores, targets, trainer.test_set, cfg)
    finally:
        trainer.close()  # the run directory's lock: the trained run takes it next
    return _sp_row("untrained (random init)", numbers, time.perf_counter() - start)


def single_positive_rows(out_dir, stamp, epochs, overrides, progress) -> tuple[list[dict], list[str], object]:
    """The untrained classifier and the SP_RUNS classifiers: rows of their test numbers."""
    rows, run_dirs, cfg = [], [], None
    for loss, extra in SP_RUNS:
        name = f"sp_{extra[0].split('=')[1]}-{stamp}"
        cfg = load_config(SP_CONFIG, [*SP_SIZE, *extra, f"out_dir={out_dir}", f"name={name}"]
                          + ([f"train.epochs={epochs}"] if epochs else []) + _overrides_for(SP_CONFIG, overrides))
        print(f"training a {cfg.loss.name} classifier on {cfg.data.source} ({cfg.labels.mode} labels) for "
              f"{cfg.train.epochs} epochs -> {cfg.run_dir}", flush=True)
        if not rows:
            rows.append(untrained_row(cfg))
        result = train(cfg, progress=progress)
        rows.append(_sp_row(loss, result.test, result.wall_s))
        run_dirs.append(str(result.run_dir))
    return rows, run_dirs, cfg


def run_demo(out_dir: str = "runs", epochs: int | None = None, overrides: list[str] = (),
             progress: bool = True) -> dict:
    """Train every demo config, write reports, print the tables; returns rows and run dirs."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows, run_dirs, cfg = _pretrain(DEMO_CONFIGS, out_dir, stamp, epochs, overrides, progress)
    rows = baselines(cfg) + rows
    sp_rows, sp_dirs, sp_cfg = single_positive_rows(out_dir, stamp, epochs, overrides, progress)
    k, t = cfg.train.knn_k, cfg.train.knn_temperature
    print()
    print(format_table(rows, COLUMNS, title=f"tagless demo: {cfg.data.source} "
                                             f"({cfg.data.image_size} px), held-out split; "
                                             f"weighted kNN k={k} T={t}; L-BFGS linear probe, L2 chosen on val; "
                                             f"k-means (k = classes) of the held-out features; SeLa's own labels "
                                             f"(head 0) on the training split"))
    print()
    print(format_table(sp_rows, SP_COLUMNS, title=f"single positive labels: {sp_cfg.data.source} "
                                                  f"(one observed positive per training image, the rest unknown); "
                                                  f"the model's own classifier on the held-out split (clean labels)"))
    print()
    print(ELSEWHERE)
    for run_dir, report in run_dirs:
        print(f"run directory: {run_dir}  (report: {report})")
    for run_dir in sp_dirs:
        print(f"run directory: {run_dir}  (report: tagless report {run_dir})")
    return {"rows": rows, "single_positive_rows": sp_rows, "run_dirs": [d for d, _ in run_dirs] + sp_dirs}
