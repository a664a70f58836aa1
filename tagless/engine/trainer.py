"""The training loop: plain PyTorch, the same code on CPU, one GPU and many (torchrun).

The engine owns the loop and calls ``method.step(batch)``; a method owns its networks and
losses. Everything random is a function of (seed, rank, step), so ``resume`` continues a run
exactly where it stopped.
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
from tagless.data import build_dataset
from tagless.engine.batches import DeviceImages, EpochSampler, Prefetcher
from tagless.engine.checkpoint import FORMAT, load_checkpoint, save_atomic
from tagless.engine.monitor import knn_monitor
from tagless.engine.optim import build_optimizer, lr_schedule, set_lr
from tagless.engine.progress import MetricsLog, progress_bar
from tagless.engine.runinfo import resolve_device, run_info
from tagless.errors import TaglessError
from tagless.methods import build_method
from tagless.models import backbone_kwargs, build_backbone_from_config


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


def step_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """The augmentation RNG of one step: a pure function of (seed, rank, step)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1))
    return g


def _amp_enabled(mode: str, device: torch.device) -> bool:
    return mode == "bf16" or mode == "on" or (mode == "auto" and device.type == "cuda")


class Trainer:
    """Builds data, model, method and optimizer from a :class:`RunConfig` and runs the loop."""

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
        self.progress = progress and dist.is_main()
        if self.ckpt_path.exists() and not resume:
            raise TaglessError(f"{self.run_dir} already holds a run: pass --resume to continue it or choose another name=")
        if resume and not self.ckpt_path.exists():
            raise TaglessError(f"nothing to resume: {self.ckpt_path} does not exist")
        self.resume = resume

        self.train_set = build_dataset(cfg.data, "train")
        self.held_out = build_dataset(cfg.data, "test") if cfg.train.knn_every_epochs else None
        torch.manual_seed(cfg.seed)  # initialisation
        self.backbone = build_backbone_from_config(cfg.model)
        self.views = build_views(cfg.views)
        self.method = build_method(cfg.method, self.backbone, self.views, seed=cfg.seed).to(self.device)
        if self._channels_last():
            self.method.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            self.backbone.compile()
        self.model = self.method
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.method, device_ids=ids, broadcast_buffers=False)
        self.optimizer = build_optimizer(cfg.optim, self.method.param_groups(), cfg.train.batch_size)
        try:
            self.sampler = EpochSampler(len(self.train_set), cfg.train.batch_size, cfg.seed, self.rank, self.world)
        except ValueError as e:
            raise TaglessError(str(e)) from None
        self.images = DeviceImages(self.train_set.images, self.device, cfg.train.preload_max_mb)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.schedule = lr_schedule(cfg.optim, self.steps_per_epoch, cfg.train.epochs)
        self.step = 0
        self.history: list[dict] = []

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
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "config": config_io.to_dict(self.cfg),
            "history": json.dumps(self.history),
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
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step = int(ckpt["step"])
        self.history = json.loads(ckpt.get("history", "[]"))

    # ---- the loop ----------------------------------------------------------------------
    def fetch(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        return self.images.batch(self.sampler.indices(epoch, i))

    def train_step(self, images: torch.Tensor) -> dict:
        cfg = self.cfg.train
        lr = set_lr(self.optimizer, float(self.schedule[self.step]))
        batch = {
            "images": images,
            "generator": step_generator(self.cfg.seed, self.rank, self.step, self.device),
        }
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=_amp_enabled(cfg.amp, self.device)):
            loss, logs = self.model(batch)
        mean_loss = dist.all_reduce_mean(loss.detach().float())
        if not torch.isfinite(mean_loss):
            where = f"last good checkpoint: {self.ckpt_path}" if self.ckpt_path.exists() else "no checkpoint was written yet"
            raise TaglessError(f"loss is {mean_loss.item()} at step {self.step}; stopping ({where}). Lower optim.lr_per_256 or set train.grad_clip_norm.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        logs = {k: float(v) for k, v in logs.items()}
        if cfg.grad_clip_norm > 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm))
        self.optimizer.step()
        self.method.after_step()
        logs["loss"] = float(mean_loss)
        logs["lr"] = lr
        return logs

    def run(self) -> TrainResult:
        cfg = self.cfg
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_io.save(cfg, self.run_dir / "config.yaml")
            (self.run_dir / "run_info.json").write_text(json.dumps(run_info(self.device, self.world), indent=2))
        if self.resume:
            self.load()
        log = MetricsLog(self.run_dir, enabled=dist.is_main(), tensorboard=cfg.train.tensorboard)
        steps = range(self.step, self.total_steps)
        prefetch = Prefetcher(self.fetch, steps) if self.images.resident is None else None
        bar = progress_bar(total=self.total_steps, initial=self.step, enabled=self.progress, desc=f"{cfg.method.name}")
        t0, images_seen, last_logs = time.perf_counter(), 0, {}
        knn = None
        for step in steps:
            images = prefetch.get()[1] if prefetch else self.fetch(step)
            last_logs = self.train_step(images)
            self.step = step + 1
            images_seen += cfg.train.batch_size
            epoch_end = self.step % self.steps_per_epoch == 0
            if self.step % cfg.train.log_every_steps == 0 or epoch_end or self.step == self.total_steps:
                log.write({"step": self.step, "epoch": self.step / self.steps_per_epoch, "split": "train", **last_logs})
            bar.update(1)
            bar.set_postfix(loss=f"{last_logs['loss']:.4f}", refresh=False)
            epoch = self.step // self.steps_per_epoch
            if epoch_end and cfg.train.knn_every_epochs and epoch % cfg.train.knn_every_epochs == 0:
                knn = self.evaluate_knn()
                log.write({"step": self.step, "epoch": epoch, "split": "eval", "knn_top1": knn})
                self.history.append({"epoch": epoch, "loss": last_logs["loss"], "knn_top1": knn})
                bar.set_postfix(loss=f"{last_logs['loss']:.4f}", knn=f"{knn:.1f}", refresh=False)
            if epoch_end or self.step % cfg.train.checkpoint_every_steps == 0 or self.step == self.total_steps:
                self.save()
        bar.close()
        wall = time.perf_counter() - t0
        if knn is None and cfg.train.knn_every_epochs and self.history:
            knn = self.history[-1].get("knn_top1")
        log.close()
        return TrainResult(
            run_dir=self.run_dir, steps=self.step, epochs=self.step // self.steps_per_epoch,
            final_loss=last_logs.get("loss", math.nan), knn_top1=knn,
            images_per_s=images_seen / wall if wall > 0 else 0.0, wall_s=wall, history=self.history,
        )

    def evaluate_knn(self) -> float | None:
        return knn_monitor(self.backbone, self.train_set, self.held_out, self.cfg, self.device)


def train(cfg, resume: bool = False, progress: bool = True) -> TrainResult:
    return Trainer(cfg, resume=resume, progress=progress).run()
