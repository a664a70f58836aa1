"""The trainer paths the end-to-end tests did not run: ``tagless train`` exit codes (0, 2, 130),
the background prefetcher for non-resident data, gradient clipping, and the online monitor's
numbers (kNN top-1, multi-label mAP@class) checked against independent computations on the
run's final checkpoint."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from run_helpers import TINY, losses, tiny
from run_helpers import records as rows
from tagless.checkpoint import load_checkpoint
from tagless.cli import main
from tagless.data import build_dataset
from tagless.engine import Trainer, train
from tagless.engine.batches import DeviceData, Prefetcher
from tagless.engine.checkpoint_features import load_backbone
from tagless.engine.features import extract_features
from tagless.engine.trainer import step_generator
from tagless.eval.knn import knn_multilabel_scores
from tagless.methods import Batch

# ---- 1. `tagless train` from the command line: exit codes 0, 2, 130 -------------------------

def test_cli_train_succeeds_with_table_and_json_line(tmp_path, capsys):
    argv = ["train", "demo_moco", f"out_dir={tmp_path}", "name=ok", *TINY, "train.epochs=1", "--json"]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    text = "\n".join(out[:-1])
    assert "tagless train ok" in text and "final loss" in text and "kNN top-1 (%)" in text  # the summary table
    assert f"run directory: {tmp_path / 'ok'}" in text
    res = json.loads(out[-1])  # --json as the last token: the last line is strict JSON
    assert res["run_dir"] == str(tmp_path / "ok")
    assert res["steps"] == 5 and res["epochs"] == 1
    assert math.isfinite(res["final loss"])
    assert res["final loss"] == pytest.approx(losses(tmp_path / "ok")[5], abs=1e-6)
    assert res["kNN top-1 (%)"] == pytest.approx(rows(tmp_path / "ok", "eval")[-1]["knn_top1"], abs=1e-9)


@pytest.mark.parametrize("bad", [
    ["demo_moco", "optim.lr_per_256=fast"],
    ["demo_moco", "method.queue_sise=3"],
    ["no/such/config.yaml"],
])
def test_cli_train_bad_input_is_exit_2_and_one_line(tmp_path, capsys, bad):
    code = main(["train", bad[0], f"out_dir={tmp_path}", "name=bad", *TINY, "train.epochs=1", *bad[1:]])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tagless: error: "), err
    key = {"optim.lr_per_256=fast": "lr_per_256", "method.queue_sise=3": "queue_sise"}.get(bad[-1], "config.yaml")
    assert key in lines[0]
    assert not (tmp_path / "bad").exists()


@pytest.mark.timeout(90)
def test_cli_train_sigint_is_exit_130_and_keeps_a_loadable_checkpoint(tmp_path):
    run_dir = tmp_path / "long"
    # `python -m tagless.cli`, with Ctrl-C's handler as a user's terminal gives it: a suite run as a
    # shell's background job hands its children SIGINT ignored, and then Python installs none
    cli = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "from tagless.cli import main; sys.exit(main())")
    cmd = [sys.executable, "-c", cli, "train", "demo_moco", f"out_dir={tmp_path}", "name=long", *TINY,
           "train.epochs=2000", "train.knn_every_epochs=0", "train.log_every_steps=1",
           "train.checkpoint_every_steps=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        # step 3's line is written after step 2's checkpoint, so one is there to check
        deadline = time.monotonic() + 25
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
            assert proc.poll() is None, f"train exited early: {proc.communicate()}"
            assert time.monotonic() < deadline, "metrics.jsonl did not reach 3 lines within 25 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=45)  # a loaded machine finishes the step slowly
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and lines[-1].startswith("tagless: interrupted"), err
    assert sum("interrupted" in line for line in lines) == 1
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["step"] >= 2 and (ckpt["step"] % 2 == 0 or ckpt["step"] % 5 == 0)
    assert set(ckpt["method"]) and ckpt["format"] == "tagless-checkpoint-v1"
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # an interrupted write leaves no temp file


# ---- 2. the prefetcher path for data that is not resident on the device ---------------------

def test_non_resident_run_equals_resident_run(tmp_path, monkeypatch):
    two_epochs = ["train.epochs=2", "train.knn_every_epochs=0"]
    resident = Trainer(tiny(tmp_path, "res", *two_epochs), progress=False)
    streamed = Trainer(tiny(tmp_path, "str", *two_epochs, "train.preload_max_mb=0"), progress=False)
    assert resident.data.resident is not None and streamed.data.resident is None
    threads = {}
    for name, trainer in (("resident", resident), ("streamed", streamed)):
        def spy(step, fetch=trainer.fetch, name=name):
            threads.setdefault(name, set()).add(threading.current_thread() is threading.main_thread())
            return fetch(step)
        monkeypatch.setattr(trainer, "fetch", spy)
    a, b = resident.run(), streamed.run()
    assert threads == {"resident": {True}, "streamed": {False}}  # only the streamed run prefetches
    la, lb = losses(a.run_dir), losses(b.run_dir)
    assert sorted(la) == sorted(lb) == list(range(1, 11))
    assert la == lb  # exactly: the same images reach the same step
    ck_a = load_checkpoint(a.run_dir / "checkpoints" / "last.pt")
    ck_b = load_checkpoint(b.run_dir / "checkpoints" / "last.pt")
    assert ck_a["method"].keys() == ck_b["method"].keys()
    for k, v in ck_a["method"].items():
        assert torch.equal(v, ck_b["method"][k]), k


@pytest.mark.timeout(60)
def test_error_in_background_fetch_surfaces_in_the_loop(tmp_path, monkeypatch):
    original = DeviceData.read
    calls = {"n": 0}

    def failing_read(self, idx):
        assert threading.current_thread() is not threading.main_thread()
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk gone")
        return original(self, idx)

    monkeypatch.setattr(DeviceData, "read", failing_read)
    trainer = Trainer(tiny(tmp_path, "gone", "train.epochs=2", "train.preload_max_mb=0", "train.knn_every_epochs=0"),
                      progress=False)
    assert trainer.data.resident is None
    with pytest.raises(OSError, match="disk gone"):
        trainer.run()
    assert calls["n"] == 3  # the background thread stops at the error
    assert trainer.step == 2  # steps 0 and 1 ran, step 2 got the error
    assert sorted(losses(trainer.run_dir)) == [1, 2]


def test_prefetcher_order_and_errors():
    seen = []

    def fetch(s):
        seen.append(s)
        return {"value": s * 10}

    p = Prefetcher(fetch, range(3, 9))
    assert [p.get() for _ in range(6)] == [(s, {"value": s * 10}) for s in range(3, 9)]
    assert seen == list(range(3, 9))

    boom = ValueError("bad step 5")

    def failing(s):
        if s == 5:
            raise boom
        return s

    p = Prefetcher(failing, range(3, 9))
    assert p.get() == (3, 3) and p.get() == (4, 4)
    with pytest.raises(ValueError) as info:
        p.get()
    assert info.value is boom
    p._thread.join(timeout=10)
    assert not p._thread.is_alive()  # nothing is fetched after the error


def test_prefetcher_runs_at_most_a_few_steps_ahead():
    calls = []
    lock = threading.Lock()

    def fetch(s):
        with lock:
            calls.append(s)
        return s

    p = Prefetcher(fetch, range(100), depth=2)
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # a run-away producer would fetch far more by now
    assert len(calls) == 3  # 2 queued + 1 waiting to be queued
    assert p.get() == (0, 0)
    assert [p.get()[0] for _ in range(99)] == list(range(1, 100))


# ---- 3. gradient clipping --------------------------------------------------------------------

PLAIN_SGD = ["optim.momentum=0", "optim.weight_decay=0", "optim.warmup_epochs=0", "optim.schedule=constant",
             "optim.lr_per_256=256", "train.knn_every_epochs=0"]


def _one_step_delta(cfg):
    """(actual parameter change, hand-computed gradient list, lr) of the first train_step."""
    trainer = Trainer(cfg, progress=False)
    images, index, target = trainer.fetch(0)
    batch = lambda: Batch(images, index, target, 0, 0, step_generator(cfg.seed, 0, 0, trainer.device))
    groups = trainer.optimizers.optimizers["main"].param_groups
    params = [p for g in groups for p in g["params"]]
    names = {id(p): n for n, p in trainer.method.named_parameters()}
    twin = copy.deepcopy(trainer.method)  # the same loss, differentiated by hand
    loss, _ = twin(batch())
    loss.backward()
    twin_params = dict(twin.named_parameters())
    grads = [twin_params[names[id(p)]].grad for p in params]
    assert all(g is not None for g in grads)
    before = [p.detach().clone() for p in params]
    logs = trainer.train_step(batch())
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before)])
    assert all(g["lr"] == logs["lr"] for g in groups)
    return delta, grads, logs


def test_grad_clip_scales_the_step_and_logs_the_pre_clip_norm(tmp_path):
    clip = 1e-3
    delta, grads, logs = _one_step_delta(tiny(tmp_path, "clip", "train.epochs=1", f"train.grad_clip_norm={clip}",
                                              *PLAIN_SGD))
    g = torch.cat([x.flatten() for x in grads])
    norm = float(torch.linalg.vector_norm(g))
    assert norm > 100 * clip  # so clipping matters
    assert float(logs["grad_norm"]) == pytest.approx(norm, rel=1e-5)  # the pre-clip norm
    lr = logs["lr"]
    clipped = -lr * min(1.0, clip / norm) * g
    assert float((delta - clipped).norm() / clipped.norm()) < 1e-3
    assert float(delta.norm()) == pytest.approx(lr * clip, rel=1e-3)
    unclipped = -lr * g
    assert float((delta - unclipped).norm() / unclipped.norm()) > 0.5


def test_without_clipping_the_step_is_the_plain_gradient_step(tmp_path):
    delta, grads, logs = _one_step_delta(tiny(tmp_path, "noclip", "train.epochs=1", *PLAIN_SGD))
    assert "grad_norm" not in logs
    expected = -logs["lr"] * torch.cat([x.flatten() for x in grads])
    assert float((delta - expected).norm() / expected.norm()) < 1e-5


def test_grad_norm_is_logged_in_metrics(tmp_path):
    clip = 1e-3
    result = train(tiny(tmp_path, "log", "train.epochs=1", "train.max_steps=3", f"train.grad_clip_norm={clip}",
                        *PLAIN_SGD), progress=False)
    train_rows = rows(result.run_dir, "train")
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > clip for r in train_rows)  # before clipping
    # the logged step-1 norm is the hand-computed norm of the first batch's gradient
    _, grads, _ = _one_step_delta(tiny(tmp_path, "log2", "train.epochs=1", *PLAIN_SGD))
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
    assert train_rows[0]["grad_norm"] == pytest.approx(norm, rel=1e-5)


# ---- 4. and 5. the online monitor against the final checkpoint -------------------------------

def _checkpoint_features(run_dir, data_cfg):
    loaded = load_backbone(run_dir / "checkpoints" / "last.pt")
    out = []
    for split in ("train", "test"):
        ds = build_dataset(data_cfg, split)
        feats = extract_features(loaded.backbone, ds.images, loaded.size, loaded.mean, loaded.std,
                                 crop_fraction=loaded.crop_fraction)
        out.append((feats, ds))
    return out


def _weighted_knn_top1(bank, bank_labels, queries, query_labels, k, temperature, classes):
    b = bank.double().numpy()
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    correct = 0
    for q, y in zip(queries.double().numpy(), query_labels):
        s = b @ (q / np.linalg.norm(q))
        votes = np.zeros(classes)
        for j in np.argsort(-s, kind="stable")[:k]:
            votes[bank_labels[j]] += np.exp(s[j] / temperature)
        correct += int(np.argmax(votes) == y)
    return 100.0 * correct / len(query_labels)


def test_online_knn_top1_equals_independent_knn_on_the_checkpoint(tmp_path):
    cfg = tiny(tmp_path, "knn", "train.epochs=2")
    result = train(cfg, progress=False)
    evals = rows(result.run_dir, "eval")
    assert [r["epoch"] for r in evals] == [1, 2]
    logged = evals[-1]["knn_top1"]
    assert result.knn_top1 == logged
    (bank, train_set), (queries, test_set) = _checkpoint_features(result.run_dir, cfg.data)
    assert len(train_set) == 160 and len(test_set) == 160
    expected = _weighted_knn_top1(bank, train_set.targets, queries, test_set.targets,
                                  cfg.train.knn_k, cfg.train.knn_temperature, 10)
    assert cfg.train.knn_k == 20 and cfg.train.knn_temperature == 0.07
    assert logged == pytest.approx(expected, abs=1e-6)


def test_online_map_class_for_multilabel_data(tmp_path):
    cfg = tiny(tmp_path, "scenes", "data.source=digit_scenes", "data.scene_count=200", "data.limit=0",
               "train.epochs=1")
    result = train(cfg, progress=False)
    evals = rows(result.run_dir, "eval")
    assert len(evals) == 1 and "knn_top1" not in evals[0]
    logged = evals[0]["map_class"]
    assert 0.0 <= logged <= 100.0
    assert result.monitor["map_class"] == logged and result.knn_top1 is None
    (bank, train_set), (queries, test_set) = _checkpoint_features(result.run_dir, cfg.data)
    assert train_set.label_kind == "multi" and (len(train_set), len(test_set)) == (160, 40)
    scores = knn_multilabel_scores(bank, torch.as_tensor(train_set.targets), queries, k=cfg.train.knn_k,
                                   temperature=cfg.train.knn_temperature).numpy()
    targets = np.asarray(test_set.targets)
    aps = [average_precision_score(targets[:, c], scores[:, c]) for c in range(targets.shape[1])
           if (targets[:, c] == 1).any()]
    assert aps
    assert logged == pytest.approx(100 * np.mean(aps), abs=1e-6)


def test_prefetcher_close_stops_a_blocked_thread():
    """A loop that ends early (an error, a NaN) closes the prefetcher: its thread, blocked on a
    full queue, ends instead of keeping the trainer alive."""
    from tagless.engine.batches import Prefetcher

    p = Prefetcher(lambda s: s, range(1000), depth=1)
    assert p.get() == (0, 0)
    p.close()
    assert not p._thread.is_alive()
