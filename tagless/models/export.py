"""A tagless ResNet backbone in the names and file formats of the frameworks people fine-tune in.

A tagless ResNet's state_dict has torchvision's names (``tagless.models.resnet``), so:

- ``torchvision``: the plain state_dict, ``torch.save``-d; it loads into
  ``torchvision.models.resnet50()`` with ``strict=False`` (only ``fc.*`` missing). With the CIFAR
  stem, ``conv1`` is a 3x3 stride-1 convolution and there is no max-pool: the two replacements
  are written as JSON beside the file (:func:`stem_replacements`).
- ``timm``: the same file; timm's ``ResNet`` uses torchvision's names and calls its classifier
  ``fc``, so ``strict=False`` reports only ``fc.weight`` and ``fc.bias``.
- ``mmdet``: ``{"state_dict": ..., "meta": ...}``, what ``mmengine``'s ``load_checkpoint`` reads
  for a backbone with ``init_cfg=dict(type="Pretrained", checkpoint=FILE)``; MMDetection's
  ``ResNet`` names its layers as torchvision does (``conv1``, ``bn1``, ``layer1.0.conv1``,
  ``layer1.0.bn1``, ``layer1.0.downsample.0`` / ``.1``) and has no ``fc``.
- ``detectron2``: the pickle detectron2's ``DetectionCheckpointer`` reads for a ``.pkl`` file,
  ``{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": True}``, with its
  ResNet's names (``stem.conv1.weight``, ``stem.conv1.norm.*``, ``res2.0.conv1.weight``,
  ``res2.0.conv1.norm.*``, ``res2.0.shortcut.weight``, ``res2.0.shortcut.norm.*``) and no
  ``num_batches_tracked`` (its FrozenBatchNorm has none). The renaming is the one MoCo's
  ``convert-pretrain-to-detectron2.py`` performs, written here as :data:`DETECTRON2_RULES`.

What each framework builds: ResNet-18/34/50 at width 1.0 (64 base filters); detectron2 and
MMDetection with the ImageNet stem only (7x7 stride-2 conv and max-pool). Anything else is
refused with a one-line error (:func:`check_exportable`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from tagless.errors import TaglessError

FORMATS = ("torchvision", "timm", "detectron2", "mmdet")
RESNETS = ("resnet18", "resnet34", "resnet50")
WHAT_LOADS = ("torchvision and timm load resnet18/34/50 at width 1.0 (the CIFAR stem with the two layer "
              "replacements of the stem JSON); detectron2 and mmdet load resnet18/34/50 at width 1.0 with "
              "the ImageNet stem")

# detectron2's ResNet names from torchvision's, applied in this order (the stem rule first, so
# that the norm rule turns stem.bn1 into stem.conv1.norm). Each entry: (what, pattern, replacement).
DETECTRON2_RULES: tuple[tuple[str, str, str | Callable], ...] = (
    ("stem", r"^(conv1|bn1)\.", r"stem.\1."),
    ("stages", r"^layer([1-4])\.", lambda m: f"res{int(m[1]) + 1}."),
    ("norms", r"(^|\.)bn([1-3])\.", r"\1conv\2.norm."),
    ("shortcut conv", r"\.downsample\.0\.", ".shortcut."),
    ("shortcut norm", r"\.downsample\.1\.", ".shortcut.norm."),
)
DETECTRON2_DROPPED = ("num_batches_tracked",)


def check_exportable(name: str, kwargs: dict, fmt: str) -> None:
    """Raise a one-line TaglessError when framework ``fmt`` cannot build backbone ``name`` built
    with ``kwargs`` (the checkpoint's ``backbone_name`` / ``backbone_kwargs``)."""
    if fmt not in FORMATS:
        raise TaglessError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    width = float(kwargs.get("width", 1.0))
    if name not in RESNETS:
        raise TaglessError(f"cannot export {name} to {fmt}: {WHAT_LOADS}")
    if width != 1.0:
        raise TaglessError(f"cannot export {name} at width {width:g} to {fmt} (every channel count differs): "
                           f"{WHAT_LOADS}")
    if fmt in ("detectron2", "mmdet") and kwargs.get("stem", "imagenet") != "imagenet":
        raise TaglessError(f"cannot export {name} with the {kwargs.get('stem')} stem to {fmt} (it builds the 7x7 "
                           f"stride-2 stem and max-pool): {WHAT_LOADS}; or --to torchvision with its stem JSON")


def detectron2_name(key: str, rules=None) -> str | None:
    """detectron2's name of a torchvision ResNet key, or None for a key it does not hold."""
    if key.rsplit(".", 1)[-1] in DETECTRON2_DROPPED:
        return None
    for _, pattern, replacement in DETECTRON2_RULES if rules is None else rules:
        key = re.sub(pattern, replacement, key)
    return key


def renamed_state(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """The backbone's state_dict in ``fmt``'s names (tensors on the CPU, detached)."""
    state = {k: v.detach().cpu() for k, v in state.items()}
    if fmt != "detectron2":
        return state
    out = {}
    for key, value in state.items():
        name = detectron2_name(key)
        if name is not None:
            out[name] = value
    return out


def stem_replacements(name: str, kwargs: dict, state: dict[str, torch.Tensor]) -> dict | None:
    """The two layers to replace in torchvision's (or timm's) ResNet before loading a CIFAR-stem
    backbone, as JSON-ready data; None for the ImageNet stem."""
    if kwargs.get("stem", "imagenet") != "cifar":
        return None
    out_ch, in_ch, k, _ = state["conv1.weight"].shape
    return {
        "backbone": name,
        "conv1": {"type": "Conv2d", "in_channels": int(in_ch), "out_channels": int(out_ch), "kernel_size": int(k),
                  "stride": 1, "padding": k // 2, "bias": False},
        "maxpool": {"type": "Identity"},
        "python": [f"model.conv1 = torch.nn.Conv2d({in_ch}, {out_ch}, kernel_size={k}, stride=1, padding={k // 2}, "
                   "bias=False)", "model.maxpool = torch.nn.Identity()"],
    }



SUFFIX = {"detectron2": ".pkl"}  # detectron2 unpickles only files named *.pkl (others go to torch.load)


def export_backbone(ckpt: dict, fmt: str, out) -> dict:
    """Write the backbone of checkpoint ``ckpt`` (a loaded tagless checkpoint dict) to ``out`` in
    format ``fmt``; returns ``{"format", "files", "keys", "stem"}`` (``stem``: the replacements
    of :func:`stem_replacements`, also written to ``OUT.stem.json`` for torchvision and timm)."""
    import json
    import pickle
    from pathlib import Path

    from tagless.files import atomic_path, write_text_atomic

    name, kwargs = ckpt.get("backbone_name"), dict(ckpt.get("backbone_kwargs") or {})
    check_exportable(str(name), kwargs, fmt)
    out = Path(out)
    if fmt in SUFFIX and out.suffix != SUFFIX[fmt]:
        raise TaglessError(f"--out {out}: {fmt} reads a file named *{SUFFIX[fmt]} (it picks the reader by the "
                           f"suffix): name it {out.with_suffix(SUFFIX[fmt]).name}")
    state = renamed_state(ckpt["backbone"], fmt)
    with atomic_path(out) as tmp:
        if fmt == "detectron2":
            model = {k: v.numpy() for k, v in state.items()}
            with open(tmp, "wb") as f:
                pickle.dump({"model": model, "__author__": "tagless", "matching_heuristics": True}, f)
        elif fmt == "mmdet":
            torch.save({"state_dict": state, "meta": {"exported_by": "tagless", "backbone": str(name)}}, tmp)
        else:
            torch.save(state, tmp)
    files = [str(out)]
    stem = stem_replacements(str(name), kwargs, ckpt["backbone"]) if fmt in ("torchvision", "timm") else None
    if stem is not None:
        json_path = out.with_suffix(".stem.json")
        write_text_atomic(json_path, json.dumps(stem, indent=2) + "\n")
        files.append(str(json_path))
    return {"format": fmt, "backbone": str(name), "files": files, "keys": len(state), "stem": stem}
