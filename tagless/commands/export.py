"""``tagless export CHECKPOINT --to {torchvision,timm,detectron2,mmdet} --out FILE``: a run's
backbone in the names and file format of the framework it is fine-tuned in (the conversion is
:mod:`tagless.models.export`), and the line that loads it there."""

from __future__ import annotations

from pathlib import Path

from tagless.errors import TaglessError
from tagless.models.export import FORMATS, export_backbone


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a run's backbone for torchvision, timm, detectron2 or MMDetection",
                       description="Write the backbone of a tagless checkpoint in another framework's names and file "
                                   "format, and print how that framework loads it. ResNet-18/34/50 at width 1.0; "
                                   "detectron2 and mmdet need the ImageNet stem (model.stem=imagenet).")
    p.add_argument("checkpoint", help="a checkpoint (runs/NAME/checkpoints/last.pt) or a run folder")
    p.add_argument("--to", dest="fmt", required=True, choices=FORMATS, help="the target framework")
    p.add_argument("--out", required=True, help="the file to write (detectron2: *.pkl)")
    p.set_defaults(func=run)


def _checkpoint_path(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    return path


def pixel_statistics(ckpt: dict) -> tuple[list[float], list[float]]:
    """The normalisation the backbone was trained with, in 0-255 pixel units (detectron2's
    ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``, MMDetection's ``data_preprocessor`` mean / std)."""
    from tagless import config_io
    from tagless.augment import ViewsConfig

    views = config_io.from_dict(ViewsConfig, (ckpt.get("config") or {}).get("views") or {}, prefix="views")
    return [round(255 * float(m), 3) for m in views.mean], [round(255 * float(s), 3) for s in views.std]


def _flow(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def usage(fmt: str, out: str, backbone: str, stem: dict | None, mean: list[float], std: list[float]) -> list[str]:
    """How the target framework loads the written file: the lines a user types there."""
    depth = backbone.removeprefix("resnet")
    if fmt in ("torchvision", "timm"):
        build = (f"model = torchvision.models.{backbone}(num_classes=NUM_CLASSES)" if fmt == "torchvision"
                 else f'model = timm.create_model("{backbone}", num_classes=NUM_CLASSES)')
        lines = [build, *(stem["python"] if stem else []),
                 f'print(model.load_state_dict(torch.load("{out}", weights_only=True), strict=False))',
                 "# missing_keys: fc.weight, fc.bias (the new classifier); unexpected_keys: none"]
        if stem:
            lines.insert(1, f"# CIFAR stem: the replacements below are also in {Path(out).with_suffix('.stem.json')}")
        return lines
    if fmt == "detectron2":
        lines = [f"MODEL.WEIGHTS {out}", "MODEL.RESNETS.STRIDE_IN_1X1 False", f"MODEL.RESNETS.DEPTH {depth}",
                 f'MODEL.PIXEL_MEAN "{_flow(mean)}"', f'MODEL.PIXEL_STD "{_flow(std)}"', "INPUT.FORMAT RGB"]
        if depth in ("18", "34"):
            lines.append("MODEL.RESNETS.RES2_OUT_CHANNELS 64")
        return ["# detectron2 config (YAML keys, or `train_net.py --config-file CFG` followed by these pairs):",
                *lines]
    return ["# MMDetection config:",
            f"model = dict(data_preprocessor=dict(mean={_flow(mean)}, std={_flow(std)}, bgr_to_rgb=True),",
            f"             backbone=dict(type='ResNet', depth={depth}, style='pytorch',",
            f"                           init_cfg=dict(type='Pretrained', checkpoint='{out}')))"]


def run(args) -> dict:
    from tagless.checkpoint import load_checkpoint

    path = _checkpoint_path(args.checkpoint)
    ckpt = load_checkpoint(path)
    if "backbone" not in ckpt:
        raise TaglessError(f"{path} holds no 'backbone' state_dict")
    result = export_backbone(ckpt, args.fmt, args.out)
    mean, std = pixel_statistics(ckpt)
    lines = usage(args.fmt, args.out, result["backbone"], result["stem"], mean, std)
    print(f"wrote {result['keys']} tensors of {result['backbone']} for {args.fmt}: {', '.join(result['files'])}")
    print("\n".join(lines))
    return {**result, "checkpoint": str(path), "usage": lines, "pixel_mean": mean, "pixel_std": std}
