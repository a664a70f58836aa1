"""Training throughput of every self-supervised method, against MoCo-v2 in the same run.

Each method trains with its bundled digit-scene recipe (the same backbone, batch and data as
``benchmarks/ssl_scenes_table.py``) through the real ``Trainer``; images/s counts source images
(a step of batch B is B images, whatever the number of crops), timed step by step after a
warm-up. The ratio column is images/s relative to MoCo-v2; "host reads" counts the reads of
device values per step (each one stalls a GPU). Run:
    python benchmarks/methods_bench.py [--device cuda] [--width 1.0] [--steps 20] [--batch 128]
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from ssl_scenes_table import METHOD_RUNS
from tagless.device import device_name, resolve_device
from tagless.engine.run_config import load_config
from tagless.tables import format_table
from train_bench import WARMUP_STEPS, host_reads_per_step, time_trainer


def method_config(key: str, args, out_dir: str, steps: int):
    _, recipe, extra = METHOD_RUNS[key]
    return load_config(recipe, [
        *extra, f"out_dir={out_dir}", f"name=bench-{key}", f"device={args.device}",
        f"data.image_size={args.size}", f"views.global_size={args.size}", f"model.width={args.width}",
        f"train.batch_size={args.batch}", "train.epochs=1000", f"train.max_steps={steps}",
        "train.knn_every_epochs=0", "train.checkpoint_every_steps=100000", "train.log_every_steps=10",
        "optim.warmup_epochs=0",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per method (after a warm-up)")
    p.add_argument("--only", nargs="+", default=list(METHOD_RUNS), choices=list(METHOD_RUNS))
    args = p.parse_args()
    device = resolve_device(args.device)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only:
            label = METHOD_RUNS[key][0]
            cfg = method_config(key, args, tmp, args.steps + WARMUP_STEPS)
            rate = time_trainer(cfg, device)
            reads = host_reads_per_step(method_config(key, args, f"{tmp}/reads-{key}", 6))
            crops = cfg.views.num_global + cfg.views.num_local
            reference = reference or (rate if key == "moco" else None)
            rows.append({"method": label, "crops": f"{cfg.views.num_global}x{cfg.views.global_size}"
                         + (f" + {cfg.views.num_local}x{cfg.views.local_size}" if cfg.views.num_local else ""),
                         "images/s": rate, "crops/s": rate * crops,
                         "vs MoCo-v2": rate / reference if reference else None, "host reads/step": reads})
            print(f"{label}: {rate:.1f} images/s", flush=True)
    print(f"device: {device_name(device)}; torch {torch.__version__}; digit scenes at {args.size} px; "
          f"resnet18 x{args.width}; batch {args.batch}; {args.steps} timed steps after {WARMUP_STEPS}")
    print(format_table(rows, title="training throughput per method (source images per second)"))


if __name__ == "__main__":
    main()
