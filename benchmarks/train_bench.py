"""Training throughput: the real ``tagless`` Trainer against a conventional pipeline, same model.

Both run MoCo-v2 steps (forward, backward, SGD, momentum update, enqueue) of the same
backbone on the same images at the same batch size:
- tagless: ``tagless.engine.Trainer`` itself, built from a config as ``tagless train`` builds
  it (uint8 images resident on the device, views made by batched tensor ops, seeded sampler,
  logging and checkpoints as configured), timed step by step;
- conventional: a ``torch.utils.data.DataLoader`` with worker processes that augment each
  image with PIL (random resized crop, colour jitter, grayscale, blur, flip: the MoCo-v2
  recipe, as torchvision's transforms do it), collate to float, then the same model step in a
  plain loop.

The data is scikit-learn's digits at ``--size`` px (the embedded default, no download).
Prints device, sizes, images/s of each and the ratio. Run:
    python benchmarks/train_bench.py [--device cuda] [--width 1.0] [--steps 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter
from torch.overrides import TorchFunctionMode

from tagless.augment import IMAGENET_MEAN, IMAGENET_STD, ViewsConfig, build_views
from tagless.data import build_dataset
from tagless.device import device_name
from tagless.engine import Trainer
from tagless.engine.run_config import load_config
from tagless.methods import Batch, DataInfo, MoCo, build_method
from tagless.models import build_backbone

MEAN, STD = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
WARMUP_STEPS = 3


def pil_view(img: Image.Image, size: int, rng: random.Random) -> np.ndarray:
    """One MoCo-v2 view of one image, per-image on the CPU (the conventional pipeline)."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(0.2, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = round(np.sqrt(area * ratio)), round(np.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
            break
    else:
        cw, ch, x0, y0 = w, h, 0, 0
    img = img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.8:
        for enhance in rng.sample([ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color], 3):
            img = enhance(img).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.2:
        img = img.convert("L").convert("RGB")
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 2.0)))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return ((np.asarray(img, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


class PilTwoViews(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, size: int):
        self.images, self.size = images, size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        rng = random.Random(i * 7919 + int(torch.randint(0, 2**30, ()).item()))
        img = Image.fromarray(self.images[i])
        return torch.from_numpy(pil_view(img, self.size, rng)), torch.from_numpy(pil_view(img, self.size, rng))


def bench_config(args, out_dir: str):
    """The MoCo-v2 run both pipelines train: symmetric loss, queue 4096, digits at args.size."""
    return load_config("demo_moco", [
        f"out_dir={out_dir}", "name=bench", f"device={args.device}", "data.source=digits",
        f"data.image_size={args.size}", f"views.global_size={args.size}", "views.global_scale=[0.2,1.0]",
        "views.flip_p=0.5", f"model.width={args.width}", "method.queue_size=4096",
        "method.proj_hidden_dim=0", "method.momentum=0.99", f"train.batch_size={args.batch}",
        "train.epochs=1000", f"train.max_steps={args.steps + WARMUP_STEPS}", "train.knn_every_epochs=0",
        "train.checkpoint_every_steps=100000", "train.log_every_steps=10", "optim.warmup_epochs=0",
    ])


def time_trainer(cfg, device: torch.device) -> float:
    """images/s of ``Trainer.run()`` over the steps after the warm-up, from per-step stamps
    (the epoch-end checkpoints the trainer writes fall inside the timed window)."""
    trainer = Trainer(cfg, progress=False)
    stamps: list[float] = []
    inner = trainer.train_step

    def stamped(*a, **k):
        out = inner(*a, **k)
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return out

    trainer.train_step = stamped
    trainer.run()
    timed = len(stamps) - WARMUP_STEPS
    return timed * cfg.train.batch_size / (stamps[-1] - stamps[WARMUP_STEPS - 1])


class HostReads(TorchFunctionMode):
    """Counts the reads of tensor values on the host (``item``, ``tolist``, ``float(t)``,
    ``bool(t)``...): each one waits for the device to finish its queue."""

    NAMES: ClassVar[set[str]] = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.NAMES
        return func(*args, **(kwargs or {}))


def host_reads_per_step(cfg) -> float:
    """Host reads of tensor values per training step of ``Trainer.run()`` (untimed run)."""
    cfg = dataclasses.replace(cfg, name="bench-reads")
    trainer = Trainer(cfg, progress=False)
    with HostReads() as reads:
        trainer.run()
    return reads.count / trainer.step


def make_method(cfg, dataset, device: torch.device, views) -> MoCo:
    torch.manual_seed(0)
    backbone = build_backbone(cfg.model.backbone, stem=cfg.model.stem, width=cfg.model.width)
    data = DataInfo.from_arrays(dataset.images, dataset.targets, dataset.classes, dataset.label_kind, device)
    return build_method(cfg.method, backbone, views, data).to(device)


def time_conventional(cfg, dataset, args, device: torch.device, amp: bool) -> float:
    images = np.ascontiguousarray(dataset.images)
    loader = torch.utils.data.DataLoader(PilTwoViews(images, args.size), batch_size=args.batch, shuffle=True,
                                         num_workers=args.workers, drop_last=True, persistent_workers=True,
                                         pin_memory=device.type == "cuda")
    passthrough = lambda crops, generator: SimpleNamespace(crops=list(crops), kinds=["global", "global"])
    method = make_method(cfg, dataset, device, passthrough)
    opt = torch.optim.SGD(method.param_groups(), lr=cfg.optim.lr_per_256 * args.batch / 256, momentum=0.9)
    gen = torch.Generator(device=device).manual_seed(0)

    def batches():
        while True:
            for v1, v2 in loader:
                yield v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)

    it = batches()
    for i in range(args.steps + WARMUP_STEPS):
        if i == WARMUP_STEPS:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        crops = next(it)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            n = len(crops[0])
            batch = Batch(crops, torch.arange(n), torch.full((n,), -1), i, 0, gen)
            loss, _ = method.step(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - start)


def augmentation_only(images: np.ndarray, size: int, batch: int, device: torch.device, views) -> tuple[float, float]:
    """Two MoCo-v2 views per image, no model: (tagless images/s, PIL images/s in one process)."""
    resident = torch.from_numpy(images[:batch]).permute(0, 3, 1, 2).contiguous().to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    views(resident, gen)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        views(resident, gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate_tagless = reps * batch / (time.perf_counter() - start)
    rng = random.Random(0)
    start = time.perf_counter()
    for i in range(batch):
        img = Image.fromarray(images[i])
        pil_view(img, size, rng), pil_view(img, size, rng)
    return rate_tagless, batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up steps)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-conventional", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = bench_config(args, tmp)
        dataset = build_dataset(cfg.data, "train")
        rate_tagless = time_trainer(cfg, device)
        reads = host_reads_per_step(cfg)
        rate_conv = None if args.skip_conventional else time_conventional(cfg, dataset, args, device, amp)
        views = build_views(ViewsConfig(recipe="two_views", global_size=args.size))
        images = np.ascontiguousarray(dataset.images)
        aug_tagless, aug_pil = augmentation_only(images, args.size, args.batch, device, views)
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(f"augmentation only (two MoCo-v2 views per image, batch {args.batch}, {args.size}px):")
    print(f"  tagless batched on {device.type}: {aug_tagless:.0f} images/s; PIL per image, one process: "
          f"{aug_pil:.0f} images/s; ratio {aug_tagless / aug_pil:.1f}x")
    print(f"MoCo-v2 (symmetric), ResNet-18 CIFAR stem width {args.width}, digits at {args.size}px "
          f"({len(images)} images), batch {args.batch}, {args.steps} timed steps after {WARMUP_STEPS}, "
          f"amp={'bf16' if amp else 'off'}")
    print(f"{'pipeline':<48}{'images/s':>10}")
    print(f"{'tagless Trainer (uint8 on device, batched views)':<48}{rate_tagless:>10.1f}")
    print(f"  host reads of device values (syncs) per step: {reads:.2f} (log every "
          f"{cfg.train.log_every_steps} steps, epoch of {len(images) // args.batch} steps)")
    if rate_conv:
        print(f"{f'PIL per-image + DataLoader ({args.workers} workers)':<48}{rate_conv:>10.1f}")
        print(f"ratio tagless Trainer / conventional: {rate_tagless / rate_conv:.2f}x")


if __name__ == "__main__":
    main()
