"""What turns a checkpoint into features: its backbone rebuilt with its eval view, and the
features of a dataset under it, cached on disk.

The cache key covers the checkpoint (path, size, modification time, step), the data
(source, root, split, size, limit...) and the layer/pooling, so a changed checkpoint or
dataset never serves stale features. Files are ``.npz`` read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tagless import config_io
from tagless.augment import ViewsConfig
from tagless.checkpoint import load_checkpoint
from tagless.data import DataConfig, ImageDataset, build_dataset
from tagless.engine.features import extract_features
from tagless.errors import TaglessError
from tagless.models import build_backbone


@dataclass
class LoadedBackbone:
    backbone: torch.nn.Module
    checkpoint_path: Path
    config: dict  # the resolved run config stored in the checkpoint
    step: int
    size: int
    mean: tuple
    std: tuple
    crop_fraction: float = 1.0


def load_backbone(path: str | Path, device: torch.device | str = "cpu") -> LoadedBackbone:
    """Rebuild the backbone of a tagless checkpoint (eval mode) with its eval preprocessing."""
    return backbone_from_checkpoint(load_checkpoint(path, map_location="cpu"), path, device)


def backbone_from_checkpoint(ckpt: dict, path: str | Path, device: torch.device | str = "cpu") -> LoadedBackbone:
    """:func:`load_backbone` from a checkpoint already read from ``path``."""
    backbone = build_backbone(ckpt["backbone_name"], **ckpt["backbone_kwargs"])
    backbone.load_state_dict(ckpt["backbone"])
    views = config_io.from_dict(ViewsConfig, ckpt.get("config", {}).get("views", {}), prefix="views")
    return LoadedBackbone(backbone.to(device).eval(), Path(path), ckpt.get("config", {}), int(ckpt.get("step", 0)),
                          views.global_size, views.mean, views.std, views.eval_crop_fraction)


def _key(loaded: LoadedBackbone, data: DataConfig, split: str, layer: str | None, pool_dim: int, pool_mode: str) -> str:
    st = os.stat(loaded.checkpoint_path)
    parts = {"ckpt": str(loaded.checkpoint_path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
             "inode": st.st_ino, "ctime": st.st_ctime_ns,  # an atomic rewrite is a new inode
             "step": loaded.step, "data": config_io.to_dict(data), "split": split, "layer": layer,
             "pool_dim": pool_dim, "pool_mode": pool_mode, "img": loaded.size, "version": 1}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def compute_features(loaded: LoadedBackbone, images: np.ndarray, layer: str | None = None, pool_dim: int = 9600,
                     pool_mode: str = "max", batch_size: int = 256, device: torch.device | str = "cpu") -> np.ndarray:
    """N x D float32 features: the pooled output, or ``layer``'s map pooled to ~``pool_dim``
    dims (SeLa's per-layer protocol, paper 002 appendix: adaptive max-pooling)."""
    feats = extract_features(loaded.backbone, images, loaded.size, loaded.mean, loaded.std, batch_size=batch_size,
                             device=device, layer=layer, pool_dim=pool_dim if layer else None, pool_mode=pool_mode,
                             crop_fraction=loaded.crop_fraction)
    return feats.cpu().numpy()


def dataset_features(loaded: LoadedBackbone, data: DataConfig, split: str, layer: str | None = None,
                     pool_dim: int = 9600, pool_mode: str = "max", cache_dir: str | None = None,
                     device: torch.device | str = "cpu", dataset: ImageDataset | None = None,
                     ) -> tuple[np.ndarray, ImageDataset]:
    """Features of ``split`` of ``data``, from the disk cache when the same key was computed;
    ``dataset``: that split already built (else it is built here)."""
    dataset = dataset if dataset is not None else build_dataset(data, split)
    cache_dir = cache_dir if cache_dir is not None else (data.cache_dir or "")
    path = (Path(cache_dir) / "features" / f"{_key(loaded, data, split, layer, pool_dim, pool_mode)}.npz"
            if cache_dir else None)
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                cached = f["x"]  # each f["x"] reads the whole array again: read it once
            if cached.ndim == 2 and cached.shape[0] == len(dataset):
                return cached, dataset
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache entry (truncated, empty, bad CRC, foreign) is recomputed
    x = compute_features(loaded, dataset.images, layer, pool_dim, pool_mode, device=device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, x=x)
        os.replace(tmp, path)
    return x, dataset


def data_origin(loaded: LoadedBackbone, data: DataConfig, data_path: str | None, overrides: list[str]) -> str:
    """One line saying which data a command reads and where that choice came from. A
    checkpoint's data section is only a suggestion (a shared run directory may point anywhere):
    the user sees it before anything is read, and ``--data`` / ``--set`` replace it."""
    where = f"{data.source}" + (f" at {data.root}" if data.root else "")
    if data_path:
        origin = f"the data section of {data_path}"
    else:
        origin = (f"the data section stored in {loaded.checkpoint_path}; --data CONFIG or --set KEY=VALUE "
                  f"reads other data")
    if overrides:
        origin += f", with --set {' '.join(overrides)}"
    return f"data: {where} ({origin})"


def data_config_for(loaded: LoadedBackbone, data_path: str | None, overrides: list[str]) -> DataConfig:
    """The data section: from a run-config YAML (or bundled recipe) when given, else the
    checkpoint's own training data; then dotted overrides (``source=cifar10 root=...``).
    :func:`data_origin` says which, in one line for the user."""
    from tagless.engine.run_config import load_config

    if data_path:
        base = config_io.to_dict(load_config(data_path).data)
    else:
        base = dict(loaded.config.get("data", {}))
        if not base:
            raise TaglessError(f"{loaded.checkpoint_path} holds no data config: pass --data CONFIG")
    for text in overrides:
        config_io.merge_override(base, *config_io.parse_override(text))
    return config_io.from_dict(DataConfig, base, prefix="data")
