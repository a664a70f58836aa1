"""The training loop: plain PyTorch, the same code on CPU, one GPU and many (torchrun).

The engine owns the loop and calls the method through the contract of
:mod:`tagless.methods.contract`; a method owns its networks, losses and per-image state.
Everything random is a function of (seed, rank, step), so ``resume`` continues a run exactly
where it stopped. The hot path does not wait for the device: the loss is checked for NaN/inf
and the logs are read only on log and checkpoint steps.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from tagless import config_io
from tagless import distributed as dist
from tagless.augment import build_views
from tagless.checkpoint import FORMAT, load_checkpoint, save_atomic
from tagless.data import build_dataset
from tagless.device import resolve_device
from tagless.engine.batches import DeviceData, EpochSampler, Prefetcher
from tagless.engine.epoch import EpochPass
from tagless.engine.label_setup import clean_targets, expected_positives, prepare_labels
from tagless.engine.monitor import MONITOR_KEYS, monitor
from tagless.engine.optim import ScheduledOptimizers
from tagless.engine.progress import MetricsLog, progress_bar
from tagless.engine.runinfo import run_info
from tagless.errors import TaglessError
from tagless.files import FileLock, write_text_atomic
from tagless.methods import METHODS, Batch, DataInfo, build_method, hook
from tagless.models import backbone_kwargs, build_backbone_from_config

_NEVER = 2**62  # "no non-finite loss yet" in the on-device record of the first bad step


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs: int
    final_loss: float
    knn_top1: float | None
    images_per_s: float
    wall_s: float
    history: list[dict] = field(default_factory=list)
    monitor: dict = field(default_factory=dict)  # the last online-monitor numbers
    test: dict = field(default_factory=dict)  # a classifier's numbers on the test split (%), selected epoch
    # best.pt: {"metric", "epoch", "value"} of the epoch chosen on the validation split (empty: none)
    selection: dict = field(default_factory=dict)
    test_last: dict = field(default_factory=dict)  # the last epoch's test numbers, when another was selected


def step_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """The augmentation RNG of one step: a pure function of (seed, rank, step)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1))
    return g


def _amp_enabled(mode: str, device: torch.device) -> bool:
    return mode == "bf16" or mode == "on" or (mode == "auto" and device.type == "cuda")


def read_logs(logs: dict) -> dict[str, float]:
    """Host floats of a step's logs, with one device sync for all the tensors."""
    tensors = {k: v for k, v in logs.items() if isinstance(v, torch.Tensor)}
    out = {k: float(v) for k, v in logs.items() if not isinstance(v, torch.Tensor)}
    if tensors:
        values = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist()
        out.update(zip(tensors, values))
    return out


class Trainer:
    """Builds data, model, method and optimisers from a :class:`RunConfig` and runs the loop."""

    def __init__(self, cfg, resume: bool = False, progress: bool = True):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        dist.init_from_env(self.device)
        if self.device.type == "cuda" and dist.world_size() > 1:
            self.device = torch.device("cuda", dist.rank() % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.run_dir = cfg.run_dir
        self.ckpt_path = self.run_dir / "checkpoints" / "last.pt"
        self.best_path = self.run_dir / "checkpoints" / "best.pt"
        self.progress = progress and dist.is_main()
        self.lock = self._lock_run_dir()
        try:
            self._setup(cfg, resume)
        except BaseException:
            self.close()
            raise

    def _lock_run_dir(self) -> FileLock | None:
        """The main process holds ``RUN_DIR/.lock`` from here until :meth:`close` (or its end):
        a second training of the same run directory stops with a one-line error instead of
        interleaving metrics.jsonl and overwriting checkpoints and labels.npz."""
        if not dist.is_main():
            return None
        missing = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        self._made_dir = missing[-1] if missing else None  # the topmost folder the lock creates
        return FileLock(self.run_dir / ".lock",
                        busy=f"{self.run_dir} is being trained by another process (it holds {self.run_dir / '.lock'}); "
                             f"wait for it to finish, or choose another name=")

    def close(self) -> None:
        """Release the run directory (a run that stopped before writing anything leaves none)."""
        lock, self.lock = getattr(self, "lock", None), None
        if lock is None:
            return
        made = getattr(self, "_made_dir", None)
        empty = made is not None and [p.name for p in self.run_dir.iterdir()] == [".lock"]
        if empty:  # unlinked while still held: nobody can lock this file after us
            (self.run_dir / ".lock").unlink(missing_ok=True)
        lock.release()
        if empty:  # the folders the lock made, from the run directory up
            for folder in (self.run_dir, *self.run_dir.parents):
                try:
                    folder.rmdir()
                except OSError:
                    break  # another process has started using it
                if folder == made:
                    break

    def _setup(self, cfg, resume: bool) -> None:
        if self.ckpt_path.exists() and not resume:
            raise TaglessError(f"{self.run_dir} already holds a run: pass --resume to continue it "
                               f"or choose another name=")
        if resume and not self.ckpt_path.exists():
            raise TaglessError(f"nothing to resume: {self.ckpt_path} does not exist")
        self.resume = resume

        self.train_set = build_dataset(cfg.data, "train")
        self.train_set, self.val_set, self.label_split = prepare_labels(cfg, self.train_set, self.run_dir, resume)
        classifier = hasattr(METHODS.get(cfg.method.name), "class_scores")  # scored on the test split
        self.test_set = build_dataset(cfg.data, "test") if cfg.train.knn_every_epochs or classifier else None
        # The monitor watches the clean validation carve-out when there is one, else the test split.
        self.held_out = (self.val_set or self.test_set) if cfg.train.knn_every_epochs else None
        self.select = self._select_metric()
        self.best: dict = {}  # {"metric", "epoch", "value"} of best.pt
        try:
            self.sampler = EpochSampler(len(self.train_set), cfg.train.batch_size, cfg.seed, self.rank, self.world)
        except ValueError as e:
            raise TaglessError(str(e)) from None
        self.data = DeviceData(self.train_set.images, self.train_set.targets, self.device, cfg.train.preload_max_mb)
        self.data_info = DataInfo(len(self.train_set), list(self.train_set.classes), self.train_set.label_kind,
                                  cfg.data.image_size, self.data.read, self.data.targets, self.train_set.paths,
                                  expected_positives(self.train_set, self.val_set, self.label_split),
                                  clean_targets=clean_targets(self.label_split, self.device))
        torch.manual_seed(cfg.seed)  # initialisation
        self.backbone = build_backbone_from_config(cfg.model)
        self.views = build_views(cfg.views)
        self.method = build_method(cfg.method, self.backbone, self.views, self.data_info, seed=cfg.seed,
                                   loss=cfg.loss).to(self.device)
        if self._channels_last():
            self.method.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            self.backbone.compile()
        self.model = self.method
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.method, device_ids=ids, forward_sync_buffers=False)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.optimizers = ScheduledOptimizers(cfg.optim, self.method, cfg.train.batch_size, self.steps_per_epoch,
                                              cfg.train.epochs)
        self.amp = _amp_enabled(cfg.train.amp, self.device)
        self.step = 0
        self.history: list[dict] = []
        self._perm_epoch, self._perm = -1, None
        # The first step with a non-finite loss, recorded on the device (read on log steps).
        self._never = torch.tensor(_NEVER, device=self.device)
        self._first_bad = self._never.clone()
        self._step_on_device = torch.zeros((), dtype=torch.long, device=self.device)

    def _select_metric(self) -> str | None:
        """The monitor key best.pt is chosen by: only on a validation split, never on test."""
        cfg = self.cfg.train
        if self.val_set is None or cfg.select_metric == "none":
            return None
        if not cfg.knn_every_epochs:
            raise TaglessError("train.select_metric chooses best.pt by the monitor on the validation split: set "
                               "train.knn_every_epochs >= 1, or train.select_metric=none")
        if cfg.select_metric != "auto":
            return cfg.select_metric
        return "knn_top1" if self.val_set.label_kind == "single" else "map_class"

    def _channels_last(self) -> bool:
        mode = self.cfg.train.channels_last
        return mode == "on" or (mode == "auto" and self.device.type == "cuda")

    # ---- checkpoints -------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": FORMAT,
            "backbone": self.backbone.state_dict(),
            "backbone_name": self.cfg.model.backbone,
            "backbone_kwargs": backbone_kwargs(self.cfg.model),
            "method": self.method.state_dict(),
            "optimizers": self.optimizers.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "config": config_io.to_dict(self.cfg),
            "history": json.dumps(self.history),
            "selection": json.dumps(self.best),
        }

    def save(self) -> None:
        if dist.is_main():
            save_atomic(self.state(), self.ckpt_path)
        dist.barrier()

    def load(self) -> None:
        ckpt = load_checkpoint(self.ckpt_path, map_location=self.device)
        if ckpt["config"]["method"]["name"] != self.cfg.method.name or ckpt["backbone_name"] != self.cfg.model.backbone:
            raise TaglessError(f"{self.ckpt_path} was written by a different method/backbone than this config")
        self.method.load_state_dict(ckpt["method"])
        self.optimizers.load_state_dict(ckpt["optimizers"] if "optimizers" in ckpt else {"main": ckpt["optimizer"]})
        self.step = int(ckpt["step"])
        self.history = json.loads(ckpt.get("history", "[]"))
        self.best = json.loads(ckpt.get("selection", "{}"))

    # ---- the loop ----------------------------------------------------------------------
    def fetch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(uint8 images, int64 dataset indices, stored targets) of this rank for ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self.data.resident is not None:
            if epoch != self._perm_epoch:  # one upload per epoch, then slices on the device
                self._perm = torch.as_tensor(self.sampler.permutation(epoch), device=self.device)
                self._perm_epoch = epoch
            index = self._perm[self.sampler.slice(i)]
        else:
            index = torch.as_tensor(self.sampler.indices(epoch, i), device=self.device)
        return self.data.read(index), index, self.data.targets[index]

    def train_step(self, batch: Batch) -> dict:
        """One optimisation step; returns the step's logs as device tensors (no sync)."""
        lrs = self.optimizers.set_lr(self.step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, logs = self.model(batch)
        finite = torch.isfinite(loss.detach())
        self._first_bad = torch.minimum(self._first_bad, torch.where(finite, self._never, self._step_on_device))
        self._step_on_device += 1
        self.optimizers.zero_grad()
        loss.backward()
        logs = {**logs, "loss": loss.detach()}
        if self.cfg.train.grad_clip_norm > 0:
            params = [p for g in self.optimizers.optimizers["main"].param_groups for p in g["params"]]
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip_norm)
        before = hook(self.method, "before_optimizer_step")
        for name, optimizer in self.optimizers.items():
            if before is not None:
                before(name, optimizer)
            optimizer.step()
        after = hook(self.method, "after_step")
        if after is not None:
            after()
        logs["lr"] = lrs["main"]
        logs.update({f"lr_{name}": lr for name, lr in lrs.items() if name != "main"})
        return logs

    def check_finite(self) -> None:
        """Stop (on every rank) if a loss since the start was NaN/inf: one device sync."""
        first_bad = int(dist.all_reduce_min(self._first_bad))
        if first_bad != _NEVER:
            where = (f"last good checkpoint: {self.ckpt_path}" if self.ckpt_path.exists()
                     else "no checkpoint was written yet")
            raise TaglessError(f"loss is not finite (nan or inf) at step {first_bad}; stopping ({where}). "
                               f"Lower optim.lr_per_256 or set train.grad_clip_norm.")

    def start_epoch(self, epoch: int) -> None:
        """The method's ``on_epoch_start`` hook, with a pass over the data in the eval view."""
        fn = hook(self.method, "on_epoch_start")
        if fn is None:
            return
        views = self.cfg.views
        settings = dict(size=views.global_size, crop_fraction=views.eval_crop_fraction, mean=views.mean, std=views.std)
        fn(epoch, EpochPass(epoch, self.data_info, self.device, settings, self.cfg.seed, self.amp,
                            self.cfg.train.epochs))

    def run(self) -> TrainResult:
        """Train to the end (or ``max_steps``); the run directory stays locked until it returns."""
        if self.lock is None and dist.is_main():
            self.lock = self._lock_run_dir()
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> TrainResult:
        cfg = self.cfg
        if dist.is_main():
            from tagless.data.summary import one_line

            print(one_line(cfg.data, self.train_set, self.test_set, self.val_set), flush=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_io.save(cfg, self.run_dir / "config.yaml")
            write_text_atomic(self.run_dir / "run_info.json", json.dumps(run_info(self.device, self.world), indent=2))
        if self.resume:
            self.load()
        self._step_on_device.fill_(self.step)
        log = MetricsLog(self.run_dir, enabled=dist.is_main(), tensorboard=cfg.train.tensorboard)
        steps = range(self.step, self.total_steps)
        prefetch = Prefetcher(self.fetch, steps) if self.data.resident is None else None
        bar = progress_bar(total=self.total_steps, initial=self.step, enabled=self.progress, desc=f"{cfg.method.name}")
        t0 = time.perf_counter()
        try:
            shown, last_monitor = self._loop(steps, prefetch, log, bar)
        finally:  # an error or a NaN stops the loop: stop the prefetch thread, close the files
            if prefetch is not None:
                prefetch.close()
            bar.close()
            log.close()
        wall = time.perf_counter() - t0
        if not last_monitor:  # resumed after the last monitor epoch: the history has it
            done = [h for h in self.history if any(k in h for k in MONITOR_KEYS)]
            last_monitor = {k: v for k, v in done[-1].items() if k in MONITOR_KEYS} if done else {}
        images_seen = (self.step - steps.start) * cfg.train.batch_size
        test, test_last = self.test_numbers()
        return TrainResult(
            run_dir=self.run_dir, steps=self.step, epochs=self.step // self.steps_per_epoch,
            final_loss=shown.get("loss", math.nan), knn_top1=last_monitor.get("knn_top1"),
            images_per_s=images_seen / wall if wall > 0 else 0.0, wall_s=wall, history=self.history,
            monitor=last_monitor, test=test, selection=dict(self.best), test_last=test_last,
        )

    def _loop(self, steps: range, prefetch: Prefetcher | None, log: MetricsLog, bar) -> tuple[dict, dict]:
        """The steps; returns the last logged numbers and the last monitor numbers."""
        cfg = self.cfg
        shown, last_monitor = {}, {}
        for step in steps:
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            if in_epoch == 0:
                self.start_epoch(epoch)
            images, index, target = prefetch.get()[1] if prefetch else self.fetch(step)
            batch = Batch(images, index, target, step, epoch, step_generator(cfg.seed, self.rank, step, self.device))
            logs = self.train_step(batch)
            self.step = step + 1
            epoch_end = self.step % self.steps_per_epoch == 0
            last = self.step == self.total_steps
            save = epoch_end or last or self.step % cfg.train.checkpoint_every_steps == 0
            if save or self.step % cfg.train.log_every_steps == 0:
                self.check_finite()
                logs["loss"] = dist.all_reduce_mean(logs["loss"].float())
                shown = read_logs(logs)
                log.write({"step": self.step, "epoch": self.step / self.steps_per_epoch, "split": "train", **shown})
                bar.set_postfix(loss=f"{shown['loss']:.4f}", refresh=False)
            bar.update(1)
            if epoch_end:
                last_monitor = self.end_epoch(log, bar, shown) or last_monitor
            if save:
                self.save()
        return shown, last_monitor

    def end_epoch(self, log: MetricsLog, bar, shown: dict) -> dict:
        """The method's ``epoch_logs`` and, on monitor epochs, the online monitor."""
        epoch = self.step // self.steps_per_epoch
        epoch_logs = hook(self.method, "epoch_logs")
        record = read_logs(epoch_logs()) if epoch_logs is not None else {}
        every = self.cfg.train.knn_every_epochs
        numbers = self.evaluate() if every and epoch % every == 0 else {}
        record.update(numbers)
        if self.select and self.select in numbers and (not self.best or numbers[self.select] > self.best["value"]):
            self.best = {"metric": self.select, "epoch": epoch, "value": numbers[self.select]}
            if dist.is_main():  # the model to keep: no optimiser state, not for --resume
                save_atomic({k: v for k, v in self.state().items() if k != "optimizers"}, self.best_path)
        if record:
            log.write({"step": self.step, "epoch": epoch, "split": "eval", **record})
            self.history.append({"epoch": epoch, "loss": shown.get("loss"), **record})
            bar.set_postfix(loss=f"{shown.get('loss', math.nan):.4f}", **{k: f"{v:.3g}" for k, v in record.items()},
                            refresh=False)
        return numbers

    def test_numbers(self) -> tuple[dict[str, float], dict[str, float]]:
        """A classifier's (``class_scores``) numbers on the test split, of the epoch chosen on the
        validation split when there is one (best.pt), and of the last epoch when that differs;
        written to test.json (and the selected logits to test_scores.npz, for the report and
        ``tagless compare``)."""
        if self.test_set is None or hook(self.method, "class_scores") is None:
            return {}, {}
        from tagless.engine.classifier_eval import save_test_scores, score_numbers, test_scores

        scores, targets = test_scores(self.method, self.test_set, self.cfg, self.device)
        numbers, last = score_numbers(scores, targets, self.test_set, self.cfg), {}
        epochs = self.step // self.steps_per_epoch
        if self.best and self.best["epoch"] != epochs and self.best_path.is_file():
            last = numbers
            self.method.load_state_dict(load_checkpoint(self.best_path, map_location=self.device)["method"])
            scores, targets = test_scores(self.method, self.test_set, self.cfg, self.device)
            numbers = score_numbers(scores, targets, self.test_set, self.cfg)
        if dist.is_main():
            record = dict(numbers)
            if self.best:
                record.update(selected_epoch=self.best["epoch"], select_metric=self.best["metric"],
                              select_value=self.best["value"], last_epoch=epochs, last_epoch_test=last or numbers)
            write_text_atomic(self.run_dir / "test.json", json.dumps(record, indent=2))
            if targets.ndim == 2:  # multi-label logits, for the report's and compare's score panels
                save_test_scores(self.run_dir, scores, targets)
        return numbers, last

    def evaluate(self) -> dict[str, float]:
        """The online monitor (kNN top-1, mAP@class or pseudo-label NMI, by label kind)."""
        return monitor(self.method, self.train_set, self.held_out, self.cfg, self.device)


def train(cfg, resume: bool = False, progress: bool = True) -> TrainResult:
    return Trainer(cfg, resume=resume, progress=progress).run()
