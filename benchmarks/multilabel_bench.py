"""Training throughput of multi-label classifiers with SCL's heatmap store on and off.

Each loss trains the ``multilabel_scenes`` recipe through the real ``Trainer`` with single
positive labels; images/s is timed step by step after a warm-up, and the ratio column is
relative to AN (the same network and views without any per-image state). "store" is the
heatmap store's memory for the training set; "store ms/step" times the store's own work
(``sample`` + ``update``) on one step's tensors, so its share of the step time shows whether
the store dominates. Run:
    python benchmarks/multilabel_bench.py [--device cuda] [--width 1.0] [--size 32] [--batch 128] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from tagless.device import device_name, resolve_device
from tagless.engine.run_config import load_config
from tagless.tables import format_table
from train_bench import WARMUP_STEPS, host_reads_per_step, time_trainer

RUNS = {  # label: overrides
    "AN (no per-image state)": ["loss.name=an"],
    "EN (EMA scores)": ["loss.name=en", "loss.warmup_epochs=0"],
    "EN+CL (EMA scores)": ["loss.name=en_cl", "loss.warmup_epochs=0"],
    "EN+SCL, uint8 store": ["loss.name=en_scl", "loss.warmup_epochs=0", "loss.heatmap_dtype=uint8"],
    "EN+SCL, float16 store": ["loss.name=en_scl", "loss.warmup_epochs=0", "loss.heatmap_dtype=float16"],
    "EN+SCL, uint8 store, top-3 classes": ["loss.name=en_scl", "loss.warmup_epochs=0", "loss.heatmap_top_k=3"],
}


def config(extra, args, out_dir: str, steps: int, name: str):
    return load_config("multilabel_scenes", [
        *extra, "labels.mode=single_positive", f"out_dir={out_dir}", f"name={name}", f"device={args.device}",
        f"data.image_size={args.size * 3 // 2}", f"views.global_size={args.size}", f"model.width={args.width}",
        f"train.batch_size={args.batch}", "train.epochs=1000", f"train.max_steps={steps}",
        "train.knn_every_epochs=0", "train.checkpoint_every_steps=100000", "optim.warmup_epochs=0",
        f"data.scene_count={args.scenes}",
    ])


def store_cost(cfg, device: torch.device, repeats: int = 20) -> tuple[float | None, float | None]:
    """(milliseconds of the heatmap store's sample + update for one step's batch, its MiB)."""
    from tagless.engine import Trainer

    trainer = Trainer(cfg, progress=False)
    method = trainer.method
    if not hasattr(method, "heatmaps"):
        return None, None
    images, index, _target = trainer.fetch(0)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        views = method.views(images, g)
        _, cams = method.logits_and_cams(views.crops[0])
        probs = torch.sigmoid(cams.float())
    store, boxes, flipped = method.heatmaps, views.boxes[0], views.flipped[0]

    def once():
        store.sample(index, boxes, flipped, cams.shape[-1])
        store.update(index, boxes, flipped, probs, g)

    once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / repeats, store.memory_bytes() / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=32, help="training crop size (the source is 1.5x)")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--scenes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (after a warm-up)")
    args = p.parse_args()
    device = resolve_device(args.device)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, extra) in enumerate(RUNS.items()):
            cfg = config(extra, args, tmp, args.steps + WARMUP_STEPS, f"bench{i}")
            rate = time_trainer(cfg, device)
            reads = host_reads_per_step(config(extra, args, f"{tmp}/reads{i}", 6, "reads"))
            store_ms, store_mb = store_cost(config(extra, args, f"{tmp}/store{i}", 1, "store"), device)
            reference = reference or rate
            step_ms = 1000 * args.batch / rate
            rows.append({"run": label, "images/s": rate, "vs AN": rate / reference, "step (ms)": step_ms,
                         "store ms/step": store_ms, "store share of step": store_ms / step_ms if store_ms else None,
                         "store (MiB)": store_mb, "host reads/step": reads})
            print(f"{label}: {rate:.1f} images/s", flush=True)
    print(f"device: {device_name(device)}; torch {torch.__version__}; digit scenes, {args.scenes} scenes, "
          f"{args.size} px crops of {args.size * 3 // 2} px sources; resnet18 x{args.width}; batch {args.batch}; "
          f"{args.steps} timed steps after {WARMUP_STEPS}")
    print(format_table(rows, title="multi-label training throughput with the SCL heatmap store on and off"))


if __name__ == "__main__":
    main()
