"""``tagless eval {knn,linear,layers,cluster,map,real}``: each evaluator on features from a
``.npz`` file or from a checkpoint + data config. Every command returns a results dict
(printed as a table; ``--json`` prints it as the last line).

The linear probe's options (``--metric``, ``--max-iter``, ...) default to the ``probe`` section
of the recipe ``--data`` names (the ``transfer_*`` recipes carry paper 004's protocol), else to
:class:`tagless.eval.config.ProbeConfig`'s defaults; an option given on the command line wins."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tagless import config_io
from tagless.device import resolve_device
from tagless.errors import TaglessError
from tagless.eval.cluster import cluster_scores, kmeans
from tagless.eval.config import PROBE_METRICS, PROTOCOLS, ProbeConfig
from tagless.eval.inputs import EvalInputs, dataset_targets, load_npz
from tagless.eval.knn import knn_accuracy
from tagless.eval.linear import linear_probe
from tagless.eval.multilabel import (
    COCO_SIZE_THRESHOLDS,
    map_by_object_size,
    map_class,
    map_sample,
    threshold_metrics,
    topk_metrics,
)
from tagless.tables import format_table

NEEDS = {
    "knn": ("x_train", "y_train", "x_test", "y_test"),
    "linear": ("x_train", "y_train", "x_test", "y_test"),
    "cluster": ("y_test", "x_test|pred"),
    "map": ("y_test", "scores|x_test"),
    "real": ("scores|x_test",),
}
METRIC_LABELS = {"accuracy": "top-1 (%)", "mean_per_class_accuracy": "mean per-class acc. (%)"}


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate frozen features: knn, linear, layers, cluster, map")
    ev = p.add_subparsers(dest="evaluator", required=True)
    common = argparse.ArgumentParser(add_help=False)
    src = common.add_argument_group("input (one of)")
    src.add_argument("--checkpoint", help="a tagless checkpoint (runs/NAME/checkpoints/last.pt)")
    src.add_argument("--features", help=".npz with x_train, y_train, x_test, y_test (multi-label y: N x C of 1/0/-1)")
    common.add_argument("--data",
                        help="run-config YAML or bundled recipe (transfer_dtd, ...) whose data section to use "
                             "(default: the checkpoint's) and whose probe section sets the linear probe's defaults")
    common.add_argument("--set", dest="data_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a data field, e.g. --set source=cifar10 --set root=/data/cifar-10-batches-py")
    common.add_argument("--layer", default=None, help="an intermediate layer instead of the pooled output")
    common.add_argument("--device", default="auto")
    common.add_argument("--cache-dir", default=None, help="feature cache folder (default: data.cache_dir)")

    linear_opts = argparse.ArgumentParser(add_help=False)
    probe = linear_opts.add_argument_group("linear probe (default: the probe section of --data's recipe, else "
                                           "the value shown)")
    probe.add_argument("--metric", choices=PROBE_METRICS, default=None,
                       help="reported, and the L2 value chosen on it: top1, mean_per_class (paper 004's MPC), "
                            "map_class, map_sample (default auto: top1, or map_class for multi-label)")
    probe.add_argument("--protocol", choices=PROTOCOLS, default=None,
                       help="val: choose L2 on a validation split, refit on train+val; best_on_test: paper 001's "
                            "report of the best test score over the sweep (default val)")
    probe.add_argument("--num-l2", type=int, default=None, help="sweep size (default 45, paper 001)")
    probe.add_argument("--l2-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                       help="default 1e-6 1e5")
    probe.add_argument("--standardize", action="store_true", default=None)
    probe.add_argument("--max-iter", type=int, default=None,
                       help="L-BFGS iterations per fit (default 1000; paper 004: 5000)")
    probe.add_argument("--val-fraction", type=float, default=None, help="protocol val's held-out share (default 0.2)")

    k = ev.add_parser("knn", parents=[common], help="weighted kNN (papers 002, 004)")
    k.add_argument("--k", type=int, action="append", help="neighbours; repeat for several (default 20)")
    k.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(s/T) (paper 002: 0.1)")
    k.add_argument("--majority", action="store_true", help="plain majority vote instead of weighted")
    k.set_defaults(run=run_knn)
    ln = ev.add_parser("linear", parents=[common, linear_opts],
                       help="L-BFGS logistic-regression probe with an L2 sweep")
    ln.set_defaults(run=run_linear)
    ly = ev.add_parser("layers", parents=[common, linear_opts], help="linear probes on every stage / conv layer")
    ly.add_argument("--layers", default=None, help="comma-separated subset (default: all of the backbone's)")
    ly.add_argument("--pool-dim", type=int, default=9600, help="pool each layer to about this many dims (paper 002)")
    ly.add_argument("--pool-mode", choices=("max", "avg"), default="max")
    ly.set_defaults(run=run_layers)
    c = ev.add_parser("cluster", parents=[common], help="NMI, aNMI, ARI, Hungarian accuracy, purity; k-means baseline",
                      description="Score the assignments 'pred' of a --features file when it holds them; else (or with "
                                  "--kmeans) score k-means on the L2-normalised x_test.")
    c.add_argument("--kmeans", action="store_true", help="run k-means on x_test even when the file holds pred")
    c.add_argument("--clusters", type=int, default=0, help="k of k-means (default: number of classes)")
    c.add_argument("--kmeans-iters", type=int, default=100)
    c.add_argument("--n-init", type=int, default=3)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(run=run_cluster)
    m = ev.add_parser("map", parents=[common, linear_opts],
                      help="mAP@class, mAP@sample, CP/CR/CF1/OP/OR/OF1, per-size mAP")
    m.add_argument("--threshold", type=float, default=0.5)
    m.add_argument("--topk", type=int, default=3)
    m.add_argument("--probe", action="store_true",
                   help="with a classifier checkpoint (method multilabel): fit the one-vs-rest linear probe on its "
                        "frozen backbone instead of using its own classifier")
    m.set_defaults(run=run_map)
    r = ev.add_parser("real", parents=[common, linear_opts],
                      help="ImageNet ReaL top-1 and mAP (paper 003, Table K.1) of a classifier or a linear probe",
                      description="Score the test split (ImageNet's validation images) against the ReaL labels: the "
                                  "checkpoint's own classifier when it has one, else (or with --probe) the linear "
                                  "probe fitted on the train split; with --features, 'scores' or x_train/y_train/"
                                  "x_test in the order of real.json. Images whose ReaL list is empty are left out.")
    r.add_argument("--real-labels", required=True, metavar="REAL_JSON",
                   help="real.json: one list of class ids per validation image, in file order")
    r.add_argument("--probe", action="store_true",
                   help="fit the linear probe even when the checkpoint has a classifier")
    r.set_defaults(run=run_real)
    p.set_defaults(func=run_eval)


def run_eval(args) -> dict:
    if bool(args.checkpoint) == bool(args.features):
        raise TaglessError("pass exactly one of --checkpoint CKPT or --features FILE.npz")
    start = time.perf_counter()
    result = args.run(args)
    result["wall_s"] = round(time.perf_counter() - start, 3)
    return result


def _data_for(args, loaded):
    """The data section the evaluation reads, said once per command (see ``data_origin``)."""
    from tagless.engine.checkpoint_features import data_config_for, data_origin

    data = data_config_for(loaded, args.data, args.data_overrides)
    if not getattr(args, "data_announced", False):
        print(data_origin(loaded, data, args.data, args.data_overrides), flush=True)
        args.data_announced = True
    return data


def _from_checkpoint(args, layer=None, pool_dim=9600, pool_mode="max") -> EvalInputs:
    from tagless.engine.checkpoint_features import dataset_features, load_backbone

    device = resolve_device(args.device)
    loaded = load_backbone(args.checkpoint, device)
    data = _data_for(args, loaded)
    x_tr, ds_tr = dataset_features(loaded, data, "train", layer, pool_dim, pool_mode, args.cache_dir, device)
    x_te, ds_te = dataset_features(loaded, data, "test", layer, pool_dim, pool_mode, args.cache_dir, device)
    return EvalInputs(x_tr, dataset_targets(ds_tr), x_te, dataset_targets(ds_te), boxes=ds_te.boxes,
                      image_size=data.image_size, areas=ds_te.extras.get("area"),
                      size_thresholds=tuple(data.object_size_thresholds), classes=list(ds_te.classes),
                      source=str(args.checkpoint), paths=ds_te.paths)


def _classifier_inputs(args) -> EvalInputs | None:
    """The test split scored by the checkpoint's own classifier (method multilabel), or None
    when the checkpoint has no classifier or ``--probe`` asks for the linear probe."""
    from tagless.engine.classifier_eval import checkpoint_test_scores, load_classifier

    if not args.checkpoint or args.probe:
        return None
    loaded, model = load_classifier(args.checkpoint, resolve_device(args.device))
    if model is None:
        return None
    data = _data_for(args, loaded)
    ds_te, scores = checkpoint_test_scores(model, loaded, data)
    return EvalInputs(y_test=dataset_targets(ds_te), scores=scores.numpy(), boxes=ds_te.boxes,
                      image_size=data.image_size, areas=ds_te.extras.get("area"),
                      size_thresholds=tuple(data.object_size_thresholds), classes=list(ds_te.classes),
                      source=str(args.checkpoint), paths=ds_te.paths)


def _inputs(args, evaluator: str) -> EvalInputs:
    if args.features:
        return load_npz(args.features, NEEDS[evaluator])
    return _from_checkpoint(args, layer=args.layer)


def _single_label(inp: EvalInputs, what: str) -> None:
    if inp.y_test is not None and inp.y_test.ndim != 1:
        raise TaglessError(f"{what} needs single labels; for multi-label targets use 'tagless eval map'")


def run_knn(args) -> dict:
    inp = _inputs(args, "knn")
    _single_label(inp, "knn")
    ks = args.k or [20]
    keep = inp.y_train >= 0
    device = resolve_device(args.device)
    t = lambda a: torch.as_tensor(a, device=device)
    num_classes = int(max(inp.y_train.max(), inp.y_test.max())) + 1
    acc = knn_accuracy(t(inp.x_train[keep]), t(inp.y_train[keep]), t(inp.x_test), t(inp.y_test), k=ks,
                       temperature=args.temperature, num_classes=num_classes, weighted=not args.majority)
    rows = [{"k": kk, "vote": "majority" if args.majority else f"weighted T={args.temperature}",
             "top-1 (%)": 100 * a["top1"], "top-5 (%)": 100 * a["top5"]} for kk, a in acc.items()]
    print(format_table(rows, title=f"kNN on {inp.source} ({len(inp.x_train[keep])} bank, {len(inp.x_test)} queries)"))
    return {"evaluator": "knn", "results": rows}


OPTIONS = {"metric": "metric", "protocol": "protocol", "num_l2": "num_l2", "l2_range": "l2_range",
           "standardize": "standardize", "max_iter": "max_iter", "val_fraction": "val_fraction"}  # field: option


def probe_settings(args) -> ProbeConfig:
    """The probe's settings: the ``probe`` section of ``--data``'s recipe (or the defaults), each
    field replaced by its command-line option when given."""
    from tagless.engine.run_config import load_config

    base = config_io.to_dict(load_config(args.data).probe if args.data else ProbeConfig())
    for field, option in OPTIONS.items():
        value = getattr(args, option, None)
        if value is not None:
            base[field] = list(value) if isinstance(value, (list, tuple)) else value
    return config_io.from_dict(ProbeConfig, base, prefix="probe")


def _probe(args, inp: EvalInputs):
    cfg = probe_settings(args)
    l2_values = np.logspace(np.log10(cfg.l2_range[0]), np.log10(cfg.l2_range[1]), cfg.num_l2)
    return linear_probe(inp.x_train, inp.y_train, inp.x_test, inp.y_test, protocol=cfg.protocol,
                        val_fraction=cfg.val_fraction, standardize=cfg.standardize, l2_values=l2_values,
                        metric=cfg.metric, max_iter=cfg.max_iter, device=resolve_device(args.device))


def _probe_row(name: str, res) -> dict:
    label = "best over sweep ON TEST (paper 001)" if res.protocol == "best_on_test" else "L2 chosen on val, refit"
    metric = METRIC_LABELS.get(res.metric, f"{res.metric} (%)")
    return {"features": name, metric: 100 * res.score, "l2": float(res.l2), "protocol": label}


def run_linear(args) -> dict:
    inp = _inputs(args, "linear")
    res = _probe(args, inp)
    row = _probe_row(args.layer or "pooled", res)
    print(format_table([row], title=f"linear probe on {inp.source}: {len(res.l2_values)} L2 values"))
    return {"evaluator": "linear", "results": [row], "metric": res.metric, "score": res.score,
            "probe": config_io.to_dict(probe_settings(args)), "n_iter": res.model.n_iter,
            "curve": {"l2": res.l2_values.tolist(), "score": res.curve.tolist(), "split": res.curve_split}}


def run_layers(args) -> dict:
    if not args.checkpoint:
        raise TaglessError("eval layers needs --checkpoint (it computes features of every layer)")
    from tagless.engine.checkpoint_features import load_backbone

    names = load_backbone(args.checkpoint).backbone.layer_names
    chosen = args.layers.split(",") if args.layers else names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise TaglessError(f"unknown layer {unknown[0]!r} (backbone layers: {', '.join(names)})")
    rows = []
    for name in chosen:
        inp = _from_checkpoint(args, layer=name, pool_dim=args.pool_dim, pool_mode=args.pool_mode)
        row = _probe_row(name, _probe(args, inp))
        row["dims"] = inp.x_train.shape[1]
        rows.append(row)
        print(f"  {name}: {inp.x_train.shape[1]} dims, {list(row.values())[1]:.2f}", flush=True)
    print(format_table(rows, title=f"per-layer linear probes of {args.checkpoint}"))
    return {"evaluator": "layers", "results": rows}


def run_cluster(args) -> dict:
    inp = _inputs(args, "cluster")
    _single_label(inp, "cluster")
    keep = inp.y_test >= 0
    if args.kmeans and inp.x_test is None:
        raise TaglessError(f"{inp.source}: --kmeans clusters 'x_test', which this input lacks (it has 'pred': "
                           "drop --kmeans to score it)")
    if inp.pred is not None and not args.kmeans:
        pred, how = inp.pred, "given assignments"
        if inp.x_test is not None:
            print(f"scoring the given assignments 'pred' of {inp.source}; pass --kmeans to cluster its x_test instead")
    else:
        if inp.pred is not None:
            print(f"--kmeans: clustering the x_test of {inp.source}; its given assignments 'pred' are not scored")
        k = args.clusters or int(inp.y_test[keep].max()) + 1
        x = torch.as_tensor(inp.x_test, device=resolve_device(args.device))
        x = torch.nn.functional.normalize(x, dim=1)
        _, assign, _ = kmeans(x, k, iters=args.kmeans_iters, n_init=args.n_init, seed=args.seed)
        pred, how = assign.cpu().numpy(), f"k-means (k={k}) of L2-normalised features"
    scores = cluster_scores(inp.y_test[keep], np.asarray(pred)[keep])
    row = {"clustering": how, **{name: 100 * v for name, v in scores.items()}}
    print(format_table([row], title=f"clustering quality on {inp.source} (x100)"))
    return {"evaluator": "cluster", "results": [row]}


def run_map(args) -> dict:
    inp = _classifier_inputs(args)
    how = "the checkpoint's classifier" if inp is not None else "given scores"
    inp = inp or _inputs(args, "map")
    if inp.y_test is None or inp.y_test.ndim != 2:
        raise TaglessError("map needs multi-label targets: y_test as an N x C matrix of 1/0/-1")
    if inp.scores is None:
        if inp.x_train is None or inp.y_train is None:
            raise TaglessError(f"{inp.source}: map needs 'scores', or x_train/y_train to fit a one-vs-rest probe")
        res = _probe(args, inp)
        inp.scores = res.model.decision_function(torch.as_tensor(inp.x_test)).cpu().numpy()
        how = f"one-vs-rest linear probe (l2={res.l2:.2e}, {res.protocol})"
    scores = torch.as_tensor(np.asarray(inp.scores, np.float32))
    targets = torch.as_tensor(inp.y_test)
    probs = torch.sigmoid(scores) if (scores.min() < 0 or scores.max() > 1) else scores
    row = {"scores": how, "mAP@class": 100 * map_class(scores, targets),
           "mAP@sample": 100 * map_sample(scores, targets)}
    row.update({f"{k}@{args.threshold}": 100 * v for k, v in threshold_metrics(probs, targets, args.threshold).items()})
    topk = min(args.topk, targets.shape[1])  # top-3 is undefined with fewer than 3 classes
    row.update({f"{k}@top{topk}": 100 * v for k, v in topk_metrics(scores, targets, topk).items()})
    result = {"evaluator": "map", "results": [row]}
    if inp.boxes is not None and inp.image_size:
        sizes = map_by_object_size(scores, targets, inp.boxes, inp.image_size, areas=inp.areas,
                                   thresholds=inp.size_thresholds or COCO_SIZE_THRESHOLDS)
        result["by_object_size"] = sizes
        row.update({f"mAP {k}": 100 * v for k, v in sizes.items() if isinstance(v, float)})
    print(format_table([row], title=f"multi-label metrics on {inp.source} (%)"))
    return result


def run_real(args) -> dict:
    """ReaL top-1 and mAP of the checkpoint's classifier, a linear probe, or given scores."""
    from tagless.data.real_labels import read_real_labels, real_labels_for
    from tagless.eval.real import real_scores

    real = read_real_labels(args.real_labels)
    inp = _classifier_inputs(args)
    how = "the checkpoint's classifier" if inp is not None else "given scores"
    inp = inp or _inputs(args, "real")
    if inp.scores is None:
        if inp.x_train is None or inp.y_train is None or inp.x_test is None:
            raise TaglessError(f"{inp.source}: real needs 'scores', or x_train/y_train/x_test to fit a linear probe")
        res = _probe(args, inp)
        inp.scores = res.model.decision_function(torch.as_tensor(inp.x_test)).cpu().numpy()
        how = f"linear probe (l2={res.l2:.2e}, {res.protocol})"
    if inp.paths:
        lists = real_labels_for(inp.paths, real, args.real_labels)
    elif len(real) == len(inp.scores):
        lists = real
    else:
        raise TaglessError(f"{inp.source}: {len(inp.scores)} scored images but {len(real)} entries in "
                           f"{args.real_labels}, and no file names to match them by")
    numbers = real_scores(inp.scores, lists)
    row = {"scores": how, "ReaL top-1 (%)": 100 * numbers["real_top1"], "ReaL mAP (%)": 100 * numbers["real_map"]}
    if inp.y_test is not None and inp.y_test.ndim == 1:  # the original labels, on the same images
        kept = np.array([i for i, labels in enumerate(lists) if labels])
        row["top-1, original labels (%)"] = 100 * float((np.asarray(inp.scores)[kept].argmax(1)
                                                          == inp.y_test[kept]).mean())
    row.update(images=numbers["images"], left_out=numbers["left_out"],
               labels_per_image=numbers["labels_per_image"])
    print(format_table([row], title=f"ImageNet ReaL on {inp.source} (images with an empty ReaL list left out)"))
    return {"evaluator": "real", "results": [row], **numbers}
