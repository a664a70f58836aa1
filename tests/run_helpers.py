"""Shared pieces of the engine and method tests: a tiny MoCo run on digits, metrics.jsonl
readers, and deterministic MoCo views."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from tagless.engine.run_config import load_config

TINY = [
    "data.source=digits", "data.image_size=16", "data.limit=160",
    "model.width=0.125", "views.global_size=16",
    "method.queue_size=64", "method.proj_hidden_dim=32", "method.proj_dim=16",
    "train.batch_size=32", "train.knn_every_epochs=1", "train.log_every_steps=1",
]


def tiny(tmp_path, name, *extra):
    """The bundled demo_moco recipe shrunk to seconds: 160 digits at 16 px, batch 32."""
    return load_config("demo_moco", [f"out_dir={tmp_path}", f"name={name}", *TINY, *extra])


def records(run_dir: Path, split: str) -> list[dict]:
    """The rows of a run's metrics.jsonl with the given split ('train' / 'eval')."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def losses(run_dir) -> dict[int, float]:
    """step -> training loss (the last value logged for a step, as after a resume)."""
    return {r["step"]: r["loss"] for r in records(run_dir, "train")}


def fixed_views(images, generator):
    """Deterministic, different views (x1 = x, x2 = flipped and shifted), known to the test."""
    x = images.float() / 255.0
    return SimpleNamespace(crops=[x, x.flip(3) * 0.9 + 0.05], kinds=["global", "global"])


def make_images(n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
