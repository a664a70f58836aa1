"""tagless export: the names and shapes each framework's ResNet-18 / ResNet-50 loads, the file
formats, and the refusals (paper 000 fine-tunes in detectron2 / MMDetection from a converted
checkpoint, as MoCo's converter does).

detectron2, MMDetection, timm and torchvision do not install beside this CPU PyTorch, so their
ResNets' state_dict names and shapes are written out literally at the end of this file (from
each framework's architecture, not from tagless code) and stand in for them:

- detectron2 (``detectron2/modeling/backbone/resnet.py``): ``stem.conv1`` and ``resN.i.convK``
  convolutions each with a ``.norm`` (FrozenBatchNorm: weight, bias, running_mean, running_var;
  no num_batches_tracked), ``resN.0.shortcut`` when the channels change;
- torchvision (``torchvision/models/resnet.py``): ``conv1``, ``bn1``, ``layerN.i.convK`` /
  ``bnK``, ``downsample.0`` / ``.1``, ``fc``;
- timm (``timm/models/resnet.py``): the same names as torchvision, classifier ``fc``;
- MMDetection (``mmdet/models/backbones/resnet.py``): torchvision's names (``norm1_name`` is
  ``bn1``; ``downsample`` a Sequential of conv and norm) without ``fc``.
"""
import json
import pickle

import numpy as np
import pytest
import torch

from tagless.checkpoint import FORMAT, save_atomic
from tagless.cli import main
from tagless.errors import TaglessError
from tagless.models import build_backbone
from tagless.models import export as export_module
from tagless.models.export import DETECTRON2_RULES, export_backbone


def _names(text: str) -> list[tuple[str, tuple[int, ...]]]:
    """``name dim dim ...`` lines -> [(name, shape)]."""
    out = []
    for line in text.strip().splitlines():
        name, *dims = line.split()
        out.append((name, tuple(int(d) for d in dims)))
    return out


def _checkpoint(tmp_path, name="resnet50", stem="imagenet", width=1.0, seed=0):
    torch.manual_seed(seed)
    kwargs = {"stem": stem, "width": width, "zero_init_residual": False}
    backbone = build_backbone(name, **kwargs)
    for m in backbone.modules():  # non-trivial statistics, so that copied values are checked
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)
    ckpt = {"format": FORMAT, "backbone": backbone.state_dict(), "backbone_name": name, "backbone_kwargs": kwargs,
            "config": {}}
    path = tmp_path / f"{name}_{stem}.pt"
    save_atomic(ckpt, path)
    return ckpt, path, backbone


def _shapes(state: dict) -> list[tuple[str, tuple[int, ...]]]:
    return sorted((k, tuple(np.shape(v))) for k, v in state.items())


def _read(fmt: str, path) -> dict:
    if fmt == "detectron2":
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")  # as detectron2's DetectionCheckpointer reads *.pkl
    return torch.load(path, weights_only=True)


EXPECTED = {  # (format, backbone) -> the framework's list, and the keys of it the export leaves out
    ("detectron2", "resnet18"): ("DETECTRON2_RESNET18", set()),
    ("detectron2", "resnet50"): ("DETECTRON2_RESNET50", set()),
    ("torchvision", "resnet18"): ("TORCHVISION_RESNET18", {"fc.weight", "fc.bias"}),
    ("torchvision", "resnet50"): ("TORCHVISION_RESNET50", {"fc.weight", "fc.bias"}),
    ("timm", "resnet18"): ("TORCHVISION_RESNET18", {"fc.weight", "fc.bias"}),  # timm's names are torchvision's
    ("timm", "resnet50"): ("TORCHVISION_RESNET50", {"fc.weight", "fc.bias"}),
    ("mmdet", "resnet18"): ("TORCHVISION_RESNET18", {"fc.weight", "fc.bias"}),  # MMDetection's ResNet has no fc
    ("mmdet", "resnet50"): ("TORCHVISION_RESNET50", {"fc.weight", "fc.bias"}),
}


@pytest.mark.parametrize(("fmt", "name"), sorted(EXPECTED))
def test_exported_names_and_shapes_are_the_frameworks(tmp_path, fmt, name):
    _, path, _ = _checkpoint(tmp_path, name)
    out = tmp_path / ("out.pkl" if fmt == "detectron2" else "out.pth")
    assert main(["export", str(path), "--to", fmt, "--out", str(out)]) == 0
    data = _read(fmt, out)
    state = {"detectron2": lambda d: d["model"], "mmdet": lambda d: d["state_dict"]}.get(fmt, lambda d: d)(data)
    listed, left_out = EXPECTED[fmt, name]
    theirs = dict(_names(globals()[listed]))
    # what load_state_dict(strict=False) would report: only the classifier missing, nothing unexpected
    assert set(theirs) - set(state) == left_out
    assert set(state) - set(theirs) == set()
    assert _shapes(state) == sorted((k, s) for k, s in theirs.items() if k not in left_out)
    assert not out.with_suffix(".stem.json").exists()  # the ImageNet stem needs no replacement


def test_detectron2_pickle_holds_the_values_as_arrays(tmp_path):
    ckpt, _, _ = _checkpoint(tmp_path, "resnet50")
    out = tmp_path / "r50.pkl"
    export_backbone(ckpt, "detectron2", out)
    data = _read("detectron2", out)
    assert data["__author__"] == "tagless" and data["matching_heuristics"] is True
    model, src = data["model"], ckpt["backbone"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in model.values())
    assert not any("num_batches_tracked" in k for k in model)
    pairs = {"stem.conv1.weight": "conv1.weight", "stem.conv1.norm.running_mean": "bn1.running_mean",
             "res2.0.conv3.norm.bias": "layer1.0.bn3.bias", "res3.0.shortcut.weight": "layer2.0.downsample.0.weight",
             "res5.0.shortcut.norm.running_var": "layer4.0.downsample.1.running_var",
             "res5.2.conv2.weight": "layer4.2.conv2.weight"}
    for theirs, ours in pairs.items():
        np.testing.assert_array_equal(model[theirs], src[ours].numpy())


def test_mmdet_checkpoint_has_a_state_dict_of_the_values(tmp_path):
    ckpt, _, _ = _checkpoint(tmp_path, "resnet18")
    out = tmp_path / "r18_mmdet.pth"
    export_backbone(ckpt, "mmdet", out)
    data = torch.load(out, weights_only=True)  # what mmengine's _load_checkpoint reads, then ['state_dict']
    assert set(data) == {"state_dict", "meta"}
    for k, v in ckpt["backbone"].items():
        assert torch.equal(data["state_dict"][k], v)


@pytest.mark.parametrize("index", range(len(DETECTRON2_RULES)))
def test_dropping_any_detectron2_rule_breaks_the_names(tmp_path, monkeypatch, index):
    """The comparison above is sensitive to every rule: without any one of them (or without
    dropping num_batches_tracked) the exported names are no longer detectron2's."""
    ckpt, _, _ = _checkpoint(tmp_path, "resnet18")
    expected = sorted(n for n, _ in _names(DETECTRON2_RESNET18))
    rules = DETECTRON2_RULES[:index] + DETECTRON2_RULES[index + 1:]
    monkeypatch.setattr(export_module, "DETECTRON2_RULES", rules)
    assert sorted(export_module.renamed_state(ckpt["backbone"], "detectron2")) != expected
    monkeypatch.setattr(export_module, "DETECTRON2_RULES", DETECTRON2_RULES)
    assert sorted(export_module.renamed_state(ckpt["backbone"], "detectron2")) == expected
    monkeypatch.setattr(export_module, "DETECTRON2_DROPPED", ())
    assert sorted(export_module.renamed_state(ckpt["backbone"], "detectron2")) != expected


def test_cifar_stem_json_makes_torchvisions_model_load_it(tmp_path):
    """The stem JSON's two replacements, applied to a torchvision-shaped ResNet-18 (the
    ImageNet-stem model with a classifier), make the CIFAR-stem export load with only fc missing,
    and the loaded network computes the run's features."""
    _, path, backbone = _checkpoint(tmp_path, "resnet18", stem="cifar")
    out = tmp_path / "r18.pth"
    assert main(["export", str(path), "--to", "torchvision", "--out", str(out)]) == 0
    stem = json.loads((tmp_path / "r18.stem.json").read_text())
    assert stem["conv1"] == {"type": "Conv2d", "in_channels": 3, "out_channels": 64, "kernel_size": 3, "stride": 1,
                             "padding": 1, "bias": False}
    assert stem["maxpool"] == {"type": "Identity"}
    model = build_backbone("resnet18", stem="imagenet", num_classes=10)  # torchvision's layout, 7x7 stem
    c = stem["conv1"]
    model.conv1 = torch.nn.Conv2d(c["in_channels"], c["out_channels"], kernel_size=c["kernel_size"],
                                  stride=c["stride"], padding=c["padding"], bias=c["bias"])
    model.maxpool = torch.nn.Identity()
    result = model.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and result.unexpected_keys == []
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), backbone.eval()(x))


@pytest.mark.parametrize(("name", "kwargs", "fmt", "message"), [
    ("resnet18", {"stem": "imagenet", "width": 0.25}, "torchvision", "at width 0.25 to torchvision"),
    ("alexnet", {"stem": "imagenet", "width": 1.0}, "timm", "cannot export alexnet to timm"),
    ("resnet18", {"stem": "cifar", "width": 1.0}, "detectron2", "cifar stem to detectron2"),
    ("resnet50", {"stem": "cifar", "width": 1.0}, "mmdet", "cifar stem to mmdet"),
])
def test_refusals_name_what_each_framework_loads(tmp_path, name, kwargs, fmt, message):
    ckpt = {"backbone": {}, "backbone_name": name, "backbone_kwargs": kwargs}
    with pytest.raises(TaglessError, match=message) as e:
        export_backbone(ckpt, fmt, tmp_path / "x.pkl")
    text = str(e.value)
    assert "\n" not in text
    assert "torchvision and timm load resnet18/34/50 at width 1.0" in text
    assert "detectron2 and mmdet load resnet18/34/50 at width 1.0 with the ImageNet stem" in text
    assert not (tmp_path / "x.pkl").exists()


def test_detectron2_file_must_be_a_pkl(tmp_path, capsys):
    _, path, _ = _checkpoint(tmp_path, "resnet18")
    assert main(["export", str(path), "--to", "detectron2", "--out", str(tmp_path / "r18.pth")]) == 2
    assert "name it r18.pkl" in capsys.readouterr().err


def test_export_prints_the_downstream_lines(tmp_path, capsys):
    """A run folder works as the argument; the printed config carries the run's normalisation."""
    ckpt, _, _ = _checkpoint(tmp_path, "resnet50")
    run = tmp_path / "run"
    ckpt["config"] = {"views": {"recipe": "two_views", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    save_atomic(ckpt, run / "checkpoints" / "last.pt")
    assert main(["export", str(run), "--to", "detectron2", "--out", str(tmp_path / "r50.pkl")]) == 0
    out = capsys.readouterr().out
    assert f"MODEL.WEIGHTS {tmp_path / 'r50.pkl'}" in out
    assert 'MODEL.PIXEL_MEAN "[127.5, 127.5, 127.5]"' in out and 'MODEL.PIXEL_STD "[63.75, 63.75, 63.75]"' in out
    assert "MODEL.RESNETS.STRIDE_IN_1X1 False" in out
    assert main(["export", str(run), "--to", "mmdet", "--out", str(tmp_path / "r50.pth")]) == 0
    out = capsys.readouterr().out
    assert f"init_cfg=dict(type='Pretrained', checkpoint='{tmp_path / 'r50.pth'}')" in out
    assert "style='pytorch'" in out


# ---- the frameworks' ResNets, written out: name, then the shape ------------------------------
DETECTRON2_RESNET18 = """
stem.conv1.weight 64 3 7 7
stem.conv1.norm.weight 64
stem.conv1.norm.bias 64
stem.conv1.norm.running_mean 64
stem.conv1.norm.running_var 64
res2.0.conv1.weight 64 64 3 3
res2.0.conv1.norm.weight 64
res2.0.conv1.norm.bias 64
res2.0.conv1.norm.running_mean 64
res2.0.conv1.norm.running_var 64
res2.0.conv2.weight 64 64 3 3
res2.0.conv2.norm.weight 64
res2.0.conv2.norm.bias 64
res2.0.conv2.norm.running_mean 64
res2.0.conv2.norm.running_var 64
res2.1.conv1.weight 64 64 3 3
res2.1.conv1.norm.weight 64
res2.1.conv1.norm.bias 64
res2.1.conv1.norm.running_mean 64
res2.1.conv1.norm.running_var 64
res2.1.conv2.weight 64 64 3 3
res2.1.conv2.norm.weight 64
res2.1.conv2.norm.bias 64
res2.1.conv2.norm.running_mean 64
res2.1.conv2.norm.running_var 64
res3.0.shortcut.weight 128 64 1 1
res3.0.shortcut.norm.weight 128
res3.0.shortcut.norm.bias 128
res3.0.shortcut.norm.running_mean 128
res3.0.shortcut.norm.running_var 128
res3.0.conv1.weight 128 64 3 3
res3.0.conv1.norm.weight 128
res3.0.conv1.norm.bias 128
res3.0.conv1.norm.running_mean 128
res3.0.conv1.norm.running_var 128
res3.0.conv2.weight 128 128 3 3
res3.0.conv2.norm.weight 128
res3.0.conv2.norm.bias 128
res3.0.conv2.norm.running_mean 128
res3.0.conv2.norm.running_var 128
res3.1.conv1.weight 128 128 3 3
res3.1.conv1.norm.weight 128
res3.1.conv1.norm.bias 128
res3.1.conv1.norm.running_mean 128
res3.1.conv1.norm.running_var 128
res3.1.conv2.weight 128 128 3 3
res3.1.conv2.norm.weight 128
res3.1.conv2.norm.bias 128
res3.1.conv2.norm.running_mean 128
res3.1.conv2.norm.running_var 128
res4.0.shortcut.weight 256 128 1 1
res4.0.shortcut.norm.weight 256
res4.0.shortcut.norm.bias 256
res4.0.shortcut.norm.running_mean 256
res4.0.shortcut.norm.running_var 256
res4.0.conv1.weight 256 128 3 3
res4.0.conv1.norm.weight 256
res4.0.conv1.norm.bias 256
res4.0.conv1.norm.running_mean 256
res4.0.conv1.norm.running_var 256
res4.0.conv2.weight 256 256 3 3
res4.0.conv2.norm.weight 256
res4.0.conv2.norm.bias 256
res4.0.conv2.norm.running_mean 256
res4.0.conv2.norm.running_var 256
res4.1.conv1.weight 256 256 3 3
res4.1.conv1.norm.weight 256
res4.1.conv1.norm.bias 256
res4.1.conv1.norm.running_mean 256
res4.1.conv1.norm.running_var 256
res4.1.conv2.weight 256 256 3 3
res4.1.conv2.norm.weight 256
res4.1.conv2.norm.bias 256
res4.1.conv2.norm.running_mean 256
res4.1.conv2.norm.running_var 256
res5.0.shortcut.weight 512 256 1 1
res5.0.shortcut.norm.weight 512
res5.0.shortcut.norm.bias 512
res5.0.shortcut.norm.running_mean 512
res5.0.shortcut.norm.running_var 512
res5.0.conv1.weight 512 256 3 3
res5.0.conv1.norm.weight 512
res5.0.conv1.norm.bias 512
res5.0.conv1.norm.running_mean 512
res5.0.conv1.norm.running_var 512
res5.0.conv2.weight 512 512 3 3
res5.0.conv2.norm.weight 512
res5.0.conv2.norm.bias 512
res5.0.conv2.norm.running_mean 512
res5.0.conv2.norm.running_var 512
res5.1.conv1.weight 512 512 3 3
res5.1.conv1.norm.weight 512
res5.1.conv1.norm.bias 512
res5.1.conv1.norm.running_mean 512
res5.1.conv1.norm.running_var 512
res5.1.conv2.weight 512 512 3 3
res5.1.conv2.norm.weight 512
res5.1.conv2.norm.bias 512
res5.1.conv2.norm.running_mean 512
res5.1.conv2.norm.running_var 512
"""

DETECTRON2_RESNET50 = """
stem.conv1.weight 64 3 7 7
stem.conv1.norm.weight 64
stem.conv1.norm.bias 64
stem.conv1.norm.running_mean 64
stem.conv1.norm.running_var 64
res2.0.shortcut.weight 256 64 1 1
res2.0.shortcut.norm.weight 256
res2.0.shortcut.norm.bias 256
res2.0.shortcut.norm.running_mean 256
res2.0.shortcut.norm.running_var 256
res2.0.conv1.weight 64 64 1 1
res2.0.conv1.norm.weight 64
res2.0.conv1.norm.bias 64
res2.0.conv1.norm.running_mean 64
res2.0.conv1.norm.running_var 64
res2.0.conv2.weight 64 64 3 3
res2.0.conv2.norm.weight 64
res2.0.conv2.norm.bias 64
res2.0.conv2.norm.running_mean 64
res2.0.conv2.norm.running_var 64
res2.0.conv3.weight 256 64 1 1
res2.0.conv3.norm.weight 256
res2.0.conv3.norm.bias 256
res2.0.conv3.norm.running_mean 256
res2.0.conv3.norm.running_var 256
res2.1.conv1.weight 64 256 1 1
res2.1.conv1.norm.weight 64
res2.1.conv1.norm.bias 64
res2.1.conv1.norm.running_mean 64
res2.1.conv1.norm.running_var 64
res2.1.conv2.weight 64 64 3 3
res2.1.conv2.norm.weight 64
res2.1.conv2.norm.bias 64
res2.1.conv2.norm.running_mean 64
res2.1.conv2.norm.running_var 64
res2.1.conv3.weight 256 64 1 1
res2.1.conv3.norm.weight 256
res2.1.conv3.norm.bias 256
res2.1.conv3.norm.running_mean 256
res2.1.conv3.norm.running_var 256
res2.2.conv1.weight 64 256 1 1
res2.2.conv1.norm.weight 64
res2.2.conv1.norm.bias 64
res2.2.conv1.norm.running_mean 64
res2.2.conv1.norm.running_var 64
res2.2.conv2.weight 64 64 3 3
res2.2.conv2.norm.weight 64
res2.2.conv2.norm.bias 64
res2.2.conv2.norm.running_mean 64
res2.2.conv2.norm.running_var 64
res2.2.conv3.weight 256 64 1 1
res2.2.conv3.norm.weight 256
res2.2.conv3.norm.bias 256
res2.2.conv3.norm.running_mean 256
res2.2.conv3.norm.running_var 256
res3.0.shortcut.weight 512 256 1 1
res3.0.shortcut.norm.weight 512
res3.0.shortcut.norm.bias 512
res3.0.shortcut.norm.running_mean 512
res3.0.shortcut.norm.running_var 512
res3.0.conv1.weight 128 256 1 1
res3.0.conv1.norm.weight 128
res3.0.conv1.norm.bias 128
res3.0.conv1.norm.running_mean 128
res3.0.conv1.norm.running_var 128
res3.0.conv2.weight 128 128 3 3
res3.0.conv2.norm.weight 128
res3.0.conv2.norm.bias 128
res3.0.conv2.norm.running_mean 128
res3.0.conv2.norm.running_var 128
res3.0.conv3.weight 512 128 1 1
res3.0.conv3.norm.weight 512
res3.0.conv3.norm.bias 512
res3.0.conv3.norm.running_mean 512
res3.0.conv3.norm.running_var 512
res3.1.conv1.weight 128 512 1 1
res3.1.conv1.norm.weight 128
res3.1.conv1.norm.bias 128
res3.1.conv1.norm.running_mean 128
res3.1.conv1.norm.running_var 128
res3.1.conv2.weight 128 128 3 3
res3.1.conv2.norm.weight 128
res3.1.conv2.norm.bias 128
res3.1.conv2.norm.running_mean 128
res3.1.conv2.norm.running_var 128
res3.1.conv3.weight 512 128 1 1
res3.1.conv3.norm.weight 512
res3.1.conv3.norm.bias 512
res3.1.conv3.norm.running_mean 512
res3.1.conv3.norm.running_var 512
res3.2.conv1.weight 128 512 1 1
res3.2.conv1.norm.weight 128
res3.2.conv1.norm.bias 128
res3.2.conv1.norm.running_mean 128
res3.2.conv1.norm.running_var 128
res3.2.conv2.weight 128 128 3 3
res3.2.conv2.norm.weight 128
res3.2.conv2.norm.bias 128
res3.2.conv2.norm.running_mean 128
res3.2.conv2.norm.running_var 128
res3.2.conv3.weight 512 128 1 1
res3.2.conv3.norm.weight 512
res3.2.conv3.norm.bias 512
res3.2.conv3.norm.running_mean 512
res3.2.conv3.norm.running_var 512
res3.3.conv1.weight 128 512 1 1
res3.3.conv1.norm.weight 128
res3.3.conv1.norm.bias 128
res3.3.conv1.norm.running_mean 128
res3.3.conv1.norm.running_var 128
res3.3.conv2.weight 128 128 3 3
res3.3.conv2.norm.weight 128
res3.3.conv2.norm.bias 128
res3.3.conv2.norm.running_mean 128
res3.3.conv2.norm.running_var 128
res3.3.conv3.weight 512 128 1 1
res3.3.conv3.norm.weight 512
res3.3.conv3.norm.bias 512
res3.3.conv3.norm.running_mean 512
res3.3.conv3.norm.running_var 512
res4.0.shortcut.weight 1024 512 1 1
res4.0.shortcut.norm.weight 1024
res4.0.shortcut.norm.bias 1024
res4.0.shortcut.norm.running_mean 1024
res4.0.shortcut.norm.running_var 1024
res4.0.conv1.weight 256 512 1 1
res4.0.conv1.norm.weight 256
res4.0.conv1.norm.bias 256
res4.0.conv1.norm.running_mean 256
res4.0.conv1.norm.running_var 256
res4.0.conv2.weight 256 256 3 3
res4.0.conv2.norm.weight 256
res4.0.conv2.norm.bias 256
res4.0.conv2.norm.running_mean 256
res4.0.conv2.norm.running_var 256
res4.0.conv3.weight 1024 256 1 1
res4.0.conv3.norm.weight 1024
res4.0.conv3.norm.bias 1024
res4.0.conv3.norm.running_mean 1024
res4.0.conv3.norm.running_var 1024
res4.1.conv1.weight 256 1024 1 1
res4.1.conv1.norm.weight 256
res4.1.conv1.norm.bias 256
res4.1.conv1.norm.running_mean 256
res4.1.conv1.norm.running_var 256
res4.1.conv2.weight 256 256 3 3
res4.1.conv2.norm.weight 256
res4.1.conv2.norm.bias 256
res4.1.conv2.norm.running_mean 256
res4.1.conv2.norm.running_var 256
res4.1.conv3.weight 1024 256 1 1
res4.1.conv3.norm.weight 1024
res4.1.conv3.norm.bias 1024
res4.1.conv3.norm.running_mean 1024
res4.1.conv3.norm.running_var 1024
res4.2.conv1.weight 256 1024 1 1
res4.2.conv1.norm.weight 256
res4.2.conv1.norm.bias 256
res4.2.conv1.norm.running_mean 256
res4.2.conv1.norm.running_var 256
res4.2.conv2.weight 256 256 3 3
res4.2.conv2.norm.weight 256
res4.2.conv2.norm.bias 256
res4.2.conv2.norm.running_mean 256
res4.2.conv2.norm.running_var 256
res4.2.conv3.weight 1024 256 1 1
res4.2.conv3.norm.weight 1024
res4.2.conv3.norm.bias 1024
res4.2.conv3.norm.running_mean 1024
res4.2.conv3.norm.running_var 1024
res4.3.conv1.weight 256 1024 1 1
res4.3.conv1.norm.weight 256
res4.3.conv1.norm.bias 256
res4.3.conv1.norm.running_mean 256
res4.3.conv1.norm.running_var 256
res4.3.conv2.weight 256 256 3 3
res4.3.conv2.norm.weight 256
res4.3.conv2.norm.bias 256
res4.3.conv2.norm.running_mean 256
res4.3.conv2.norm.running_var 256
res4.3.conv3.weight 1024 256 1 1
res4.3.conv3.norm.weight 1024
res4.3.conv3.norm.bias 1024
res4.3.conv3.norm.running_mean 1024
res4.3.conv3.norm.running_var 1024
res4.4.conv1.weight 256 1024 1 1
res4.4.conv1.norm.weight 256
res4.4.conv1.norm.bias 256
res4.4.conv1.norm.running_mean 256
res4.4.conv1.norm.running_var 256
res4.4.conv2.weight 256 256 3 3
res4.4.conv2.norm.weight 256
res4.4.conv2.norm.bias 256
res4.4.conv2.norm.running_mean 256
res4.4.conv2.norm.running_var 256
res4.4.conv3.weight 1024 256 1 1
res4.4.conv3.norm.weight 1024
res4.4.conv3.norm.bias 1024
res4.4.conv3.norm.running_mean 1024
res4.4.conv3.norm.running_var 1024
res4.5.conv1.weight 256 1024 1 1
res4.5.conv1.norm.weight 256
res4.5.conv1.norm.bias 256
res4.5.conv1.norm.running_mean 256
res4.5.conv1.norm.running_var 256
res4.5.conv2.weight 256 256 3 3
res4.5.conv2.norm.weight 256
res4.5.conv2.norm.bias 256
res4.5.conv2.norm.running_mean 256
res4.5.conv2.norm.running_var 256
res4.5.conv3.weight 1024 256 1 1
res4.5.conv3.norm.weight 1024
res4.5.conv3.norm.bias 1024
res4.5.conv3.norm.running_mean 1024
res4.5.conv3.norm.running_var 1024
res5.0.shortcut.weight 2048 1024 1 1
res5.0.shortcut.norm.weight 2048
res5.0.shortcut.norm.bias 2048
res5.0.shortcut.norm.running_mean 2048
res5.0.shortcut.norm.running_var 2048
res5.0.conv1.weight 512 1024 1 1
res5.0.conv1.norm.weight 512
res5.0.conv1.norm.bias 512
res5.0.conv1.norm.running_mean 512
res5.0.conv1.norm.running_var 512
res5.0.conv2.weight 512 512 3 3
res5.0.conv2.norm.weight 512
res5.0.conv2.norm.bias 512
res5.0.conv2.norm.running_mean 512
res5.0.conv2.norm.running_var 512
res5.0.conv3.weight 2048 512 1 1
res5.0.conv3.norm.weight 2048
res5.0.conv3.norm.bias 2048
res5.0.conv3.norm.running_mean 2048
res5.0.conv3.norm.running_var 2048
res5.1.conv1.weight 512 2048 1 1
res5.1.conv1.norm.weight 512
res5.1.conv1.norm.bias 512
res5.1.conv1.norm.running_mean 512
res5.1.conv1.norm.running_var 512
res5.1.conv2.weight 512 512 3 3
res5.1.conv2.norm.weight 512
res5.1.conv2.norm.bias 512
res5.1.conv2.norm.running_mean 512
res5.1.conv2.norm.running_var 512
res5.1.conv3.weight 2048 512 1 1
res5.1.conv3.norm.weight 2048
res5.1.conv3.norm.bias 2048
res5.1.conv3.norm.running_mean 2048
res5.1.conv3.norm.running_var 2048
res5.2.conv1.weight 512 2048 1 1
res5.2.conv1.norm.weight 512
res5.2.conv1.norm.bias 512
res5.2.conv1.norm.running_mean 512
res5.2.conv1.norm.running_var 512
res5.2.conv2.weight 512 512 3 3
res5.2.conv2.norm.weight 512
res5.2.conv2.norm.bias 512
res5.2.conv2.norm.running_mean 512
res5.2.conv2.norm.running_var 512
res5.2.conv3.weight 2048 512 1 1
res5.2.conv3.norm.weight 2048
res5.2.conv3.norm.bias 2048
res5.2.conv3.norm.running_mean 2048
res5.2.conv3.norm.running_var 2048
"""

TORCHVISION_RESNET18 = """
conv1.weight 64 3 7 7
bn1.weight 64
bn1.bias 64
bn1.running_mean 64
bn1.running_var 64
bn1.num_batches_tracked
layer1.0.conv1.weight 64 64 3 3
layer1.0.bn1.weight 64
layer1.0.bn1.bias 64
layer1.0.bn1.running_mean 64
layer1.0.bn1.running_var 64
layer1.0.bn1.num_batches_tracked
layer1.0.conv2.weight 64 64 3 3
layer1.0.bn2.weight 64
layer1.0.bn2.bias 64
layer1.0.bn2.running_mean 64
layer1.0.bn2.running_var 64
layer1.0.bn2.num_batches_tracked
layer1.1.conv1.weight 64 64 3 3
layer1.1.bn1.weight 64
layer1.1.bn1.bias 64
layer1.1.bn1.running_mean 64
layer1.1.bn1.running_var 64
layer1.1.bn1.num_batches_tracked
layer1.1.conv2.weight 64 64 3 3
layer1.1.bn2.weight 64
layer1.1.bn2.bias 64
layer1.1.bn2.running_mean 64
layer1.1.bn2.running_var 64
layer1.1.bn2.num_batches_tracked
layer2.0.conv1.weight 128 64 3 3
layer2.0.bn1.weight 128
layer2.0.bn1.bias 128
layer2.0.bn1.running_mean 128
layer2.0.bn1.running_var 128
layer2.0.bn1.num_batches_tracked
layer2.0.conv2.weight 128 128 3 3
layer2.0.bn2.weight 128
layer2.0.bn2.bias 128
layer2.0.bn2.running_mean 128
layer2.0.bn2.running_var 128
layer2.0.bn2.num_batches_tracked
layer2.0.downsample.0.weight 128 64 1 1
layer2.0.downsample.1.weight 128
layer2.0.downsample.1.bias 128
layer2.0.downsample.1.running_mean 128
layer2.0.downsample.1.running_var 128
layer2.0.downsample.1.num_batches_tracked
layer2.1.conv1.weight 128 128 3 3
layer2.1.bn1.weight 128
layer2.1.bn1.bias 128
layer2.1.bn1.running_mean 128
layer2.1.bn1.running_var 128
layer2.1.bn1.num_batches_tracked
layer2.1.conv2.weight 128 128 3 3
layer2.1.bn2.weight 128
layer2.1.bn2.bias 128
layer2.1.bn2.running_mean 128
layer2.1.bn2.running_var 128
layer2.1.bn2.num_batches_tracked
layer3.0.conv1.weight 256 128 3 3
layer3.0.bn1.weight 256
layer3.0.bn1.bias 256
layer3.0.bn1.running_mean 256
layer3.0.bn1.running_var 256
layer3.0.bn1.num_batches_tracked
layer3.0.conv2.weight 256 256 3 3
layer3.0.bn2.weight 256
layer3.0.bn2.bias 256
layer3.0.bn2.running_mean 256
layer3.0.bn2.running_var 256
layer3.0.bn2.num_batches_tracked
layer3.0.downsample.0.weight 256 128 1 1
layer3.0.downsample.1.weight 256
layer3.0.downsample.1.bias 256
layer3.0.downsample.1.running_mean 256
layer3.0.downsample.1.running_var 256
layer3.0.downsample.1.num_batches_tracked
layer3.1.conv1.weight 256 256 3 3
layer3.1.bn1.weight 256
layer3.1.bn1.bias 256
layer3.1.bn1.running_mean 256
layer3.1.bn1.running_var 256
layer3.1.bn1.num_batches_tracked
layer3.1.conv2.weight 256 256 3 3
layer3.1.bn2.weight 256
layer3.1.bn2.bias 256
layer3.1.bn2.running_mean 256
layer3.1.bn2.running_var 256
layer3.1.bn2.num_batches_tracked
layer4.0.conv1.weight 512 256 3 3
layer4.0.bn1.weight 512
layer4.0.bn1.bias 512
layer4.0.bn1.running_mean 512
layer4.0.bn1.running_var 512
layer4.0.bn1.num_batches_tracked
layer4.0.conv2.weight 512 512 3 3
layer4.0.bn2.weight 512
layer4.0.bn2.bias 512
layer4.0.bn2.running_mean 512
layer4.0.bn2.running_var 512
layer4.0.bn2.num_batches_tracked
layer4.0.downsample.0.weight 512 256 1 1
layer4.0.downsample.1.weight 512
layer4.0.downsample.1.bias 512
layer4.0.downsample.1.running_mean 512
layer4.0.downsample.1.running_var 512
layer4.0.downsample.1.num_batches_tracked
layer4.1.conv1.weight 512 512 3 3
layer4.1.bn1.weight 512
layer4.1.bn1.bias 512
layer4.1.bn1.running_mean 512
layer4.1.bn1.running_var 512
layer4.1.bn1.num_batches_tracked
layer4.1.conv2.weight 512 512 3 3
layer4.1.bn2.weight 512
layer4.1.bn2.bias 512
layer4.1.bn2.running_mean 512
layer4.1.bn2.running_var 512
layer4.1.bn2.num_batches_tracked
fc.weight 1000 512
fc.bias 1000
"""

TORCHVISION_RESNET50 = """
conv1.weight 64 3 7 7
bn1.weight 64
bn1.bias 64
bn1.running_mean 64
bn1.running_var 64
bn1.num_batches_tracked
layer1.0.conv1.weight 64 64 1 1
layer1.0.bn1.weight 64
layer1.0.bn1.bias 64
layer1.0.bn1.running_mean 64
layer1.0.bn1.running_var 64
layer1.0.bn1.num_batches_tracked
layer1.0.conv2.weight 64 64 3 3
layer1.0.bn2.weight 64
layer1.0.bn2.bias 64
layer1.0.bn2.running_mean 64
layer1.0.bn2.running_var 64
layer1.0.bn2.num_batches_tracked
layer1.0.conv3.weight 256 64 1 1
layer1.0.bn3.weight 256
layer1.0.bn3.bias 256
layer1.0.bn3.running_mean 256
layer1.0.bn3.running_var 256
layer1.0.bn3.num_batches_tracked
layer1.0.downsample.0.weight 256 64 1 1
layer1.0.downsample.1.weight 256
layer1.0.downsample.1.bias 256
layer1.0.downsample.1.running_mean 256
layer1.0.downsample.1.running_var 256
layer1.0.downsample.1.num_batches_tracked
layer1.1.conv1.weight 64 256 1 1
layer1.1.bn1.weight 64
layer1.1.bn1.bias 64
layer1.1.bn1.running_mean 64
layer1.1.bn1.running_var 64
layer1.1.bn1.num_batches_tracked
layer1.1.conv2.weight 64 64 3 3
layer1.1.bn2.weight 64
layer1.1.bn2.bias 64
layer1.1.bn2.running_mean 64
layer1.1.bn2.running_var 64
layer1.1.bn2.num_batches_tracked
layer1.1.conv3.weight 256 64 1 1
layer1.1.bn3.weight 256
layer1.1.bn3.bias 256
layer1.1.bn3.running_mean 256
layer1.1.bn3.running_var 256
layer1.1.bn3.num_batches_tracked
layer1.2.conv1.weight 64 256 1 1
layer1.2.bn1.weight 64
layer1.2.bn1.bias 64
layer1.2.bn1.running_mean 64
layer1.2.bn1.running_var 64
layer1.2.bn1.num_batches_tracked
layer1.2.conv2.weight 64 64 3 3
layer1.2.bn2.weight 64
layer1.2.bn2.bias 64
layer1.2.bn2.running_mean 64
layer1.2.bn2.running_var 64
layer1.2.bn2.num_batches_tracked
layer1.2.conv3.weight 256 64 1 1
layer1.2.bn3.weight 256
layer1.2.bn3.bias 256
layer1.2.bn3.running_mean 256
layer1.2.bn3.running_var 256
layer1.2.bn3.num_batches_tracked
layer2.0.conv1.weight 128 256 1 1
layer2.0.bn1.weight 128
layer2.0.bn1.bias 128
layer2.0.bn1.running_mean 128
layer2.0.bn1.running_var 128
layer2.0.bn1.num_batches_tracked
layer2.0.conv2.weight 128 128 3 3
layer2.0.bn2.weight 128
layer2.0.bn2.bias 128
layer2.0.bn2.running_mean 128
layer2.0.bn2.running_var 128
layer2.0.bn2.num_batches_tracked
layer2.0.conv3.weight 512 128 1 1
layer2.0.bn3.weight 512
layer2.0.bn3.bias 512
layer2.0.bn3.running_mean 512
layer2.0.bn3.running_var 512
layer2.0.bn3.num_batches_tracked
layer2.0.downsample.0.weight 512 256 1 1
layer2.0.downsample.1.weight 512
layer2.0.downsample.1.bias 512
layer2.0.downsample.1.running_mean 512
layer2.0.downsample.1.running_var 512
layer2.0.downsample.1.num_batches_tracked
layer2.1.conv1.weight 128 512 1 1
layer2.1.bn1.weight 128
layer2.1.bn1.bias 128
layer2.1.bn1.running_mean 128
layer2.1.bn1.running_var 128
layer2.1.bn1.num_batches_tracked
layer2.1.conv2.weight 128 128 3 3
layer2.1.bn2.weight 128
layer2.1.bn2.bias 128
layer2.1.bn2.running_mean 128
layer2.1.bn2.running_var 128
layer2.1.bn2.num_batches_tracked
layer2.1.conv3.weight 512 128 1 1
layer2.1.bn3.weight 512
layer2.1.bn3.bias 512
layer2.1.bn3.running_mean 512
layer2.1.bn3.running_var 512
layer2.1.bn3.num_batches_tracked
layer2.2.conv1.weight 128 512 1 1
layer2.2.bn1.weight 128
layer2.2.bn1.bias 128
layer2.2.bn1.running_mean 128
layer2.2.bn1.running_var 128
layer2.2.bn1.num_batches_tracked
layer2.2.conv2.weight 128 128 3 3
layer2.2.bn2.weight 128
layer2.2.bn2.bias 128
layer2.2.bn2.running_mean 128
layer2.2.bn2.running_var 128
layer2.2.bn2.num_batches_tracked
layer2.2.conv3.weight 512 128 1 1
layer2.2.bn3.weight 512
layer2.2.bn3.bias 512
layer2.2.bn3.running_mean 512
layer2.2.bn3.running_var 512
layer2.2.bn3.num_batches_tracked
layer2.3.conv1.weight 128 512 1 1
layer2.3.bn1.weight 128
layer2.3.bn1.bias 128
layer2.3.bn1.running_mean 128
layer2.3.bn1.running_var 128
layer2.3.bn1.num_batches_tracked
layer2.3.conv2.weight 128 128 3 3
layer2.3.bn2.weight 128
layer2.3.bn2.bias 128
layer2.3.bn2.running_mean 128
layer2.3.bn2.running_var 128
layer2.3.bn2.num_batches_tracked
layer2.3.conv3.weight 512 128 1 1
layer2.3.bn3.weight 512
layer2.3.bn3.bias 512
layer2.3.bn3.running_mean 512
layer2.3.bn3.running_var 512
layer2.3.bn3.num_batches_tracked
layer3.0.conv1.weight 256 512 1 1
layer3.0.bn1.weight 256
layer3.0.bn1.bias 256
layer3.0.bn1.running_mean 256
layer3.0.bn1.running_var 256
layer3.0.bn1.num_batches_tracked
layer3.0.conv2.weight 256 256 3 3
layer3.0.bn2.weight 256
layer3.0.bn2.bias 256
layer3.0.bn2.running_mean 256
layer3.0.bn2.running_var 256
layer3.0.bn2.num_batches_tracked
layer3.0.conv3.weight 1024 256 1 1
layer3.0.bn3.weight 1024
layer3.0.bn3.bias 1024
layer3.0.bn3.running_mean 1024
layer3.0.bn3.running_var 1024
layer3.0.bn3.num_batches_tracked
layer3.0.downsample.0.weight 1024 512 1 1
layer3.0.downsample.1.weight 1024
layer3.0.downsample.1.bias 1024
layer3.0.downsample.1.running_mean 1024
layer3.0.downsample.1.running_var 1024
layer3.0.downsample.1.num_batches_tracked
layer3.1.conv1.weight 256 1024 1 1
layer3.1.bn1.weight 256
layer3.1.bn1.bias 256
layer3.1.bn1.running_mean 256
layer3.1.bn1.running_var 256
layer3.1.bn1.num_batches_tracked
layer3.1.conv2.weight 256 256 3 3
layer3.1.bn2.weight 256
layer3.1.bn2.bias 256
layer3.1.bn2.running_mean 256
layer3.1.bn2.running_var 256
layer3.1.bn2.num_batches_tracked
layer3.1.conv3.weight 1024 256 1 1
layer3.1.bn3.weight 1024
layer3.1.bn3.bias 1024
layer3.1.bn3.running_mean 1024
layer3.1.bn3.running_var 1024
layer3.1.bn3.num_batches_tracked
layer3.2.conv1.weight 256 1024 1 1
layer3.2.bn1.weight 256
layer3.2.bn1.bias 256
layer3.2.bn1.running_mean 256
layer3.2.bn1.running_var 256
layer3.2.bn1.num_batches_tracked
layer3.2.conv2.weight 256 256 3 3
layer3.2.bn2.weight 256
layer3.2.bn2.bias 256
layer3.2.bn2.running_mean 256
layer3.2.bn2.running_var 256
layer3.2.bn2.num_batches_tracked
layer3.2.conv3.weight 1024 256 1 1
layer3.2.bn3.weight 1024
layer3.2.bn3.bias 1024
layer3.2.bn3.running_mean 1024
layer3.2.bn3.running_var 1024
layer3.2.bn3.num_batches_tracked
layer3.3.conv1.weight 256 1024 1 1
layer3.3.bn1.weight 256
layer3.3.bn1.bias 256
layer3.3.bn1.running_mean 256
layer3.3.bn1.running_var 256
layer3.3.bn1.num_batches_tracked
layer3.3.conv2.weight 256 256 3 3
layer3.3.bn2.weight 256
layer3.3.bn2.bias 256
layer3.3.bn2.running_mean 256
layer3.3.bn2.running_var 256
layer3.3.bn2.num_batches_tracked
layer3.3.conv3.weight 1024 256 1 1
layer3.3.bn3.weight 1024
layer3.3.bn3.bias 1024
layer3.3.bn3.running_mean 1024
layer3.3.bn3.running_var 1024
layer3.3.bn3.num_batches_tracked
layer3.4.conv1.weight 256 1024 1 1
layer3.4.bn1.weight 256
layer3.4.bn1.bias 256
layer3.4.bn1.running_mean 256
layer3.4.bn1.running_var 256
layer3.4.bn1.num_batches_tracked
layer3.4.conv2.weight 256 256 3 3
layer3.4.bn2.weight 256
layer3.4.bn2.bias 256
layer3.4.bn2.running_mean 256
layer3.4.bn2.running_var 256
layer3.4.bn2.num_batches_tracked
layer3.4.conv3.weight 1024 256 1 1
layer3.4.bn3.weight 1024
layer3.4.bn3.bias 1024
layer3.4.bn3.running_mean 1024
layer3.4.bn3.running_var 1024
layer3.4.bn3.num_batches_tracked
layer3.5.conv1.weight 256 1024 1 1
layer3.5.bn1.weight 256
layer3.5.bn1.bias 256
layer3.5.bn1.running_mean 256
layer3.5.bn1.running_var 256
layer3.5.bn1.num_batches_tracked
layer3.5.conv2.weight 256 256 3 3
layer3.5.bn2.weight 256
layer3.5.bn2.bias 256
layer3.5.bn2.running_mean 256
layer3.5.bn2.running_var 256
layer3.5.bn2.num_batches_tracked
layer3.5.conv3.weight 1024 256 1 1
layer3.5.bn3.weight 1024
layer3.5.bn3.bias 1024
layer3.5.bn3.running_mean 1024
layer3.5.bn3.running_var 1024
layer3.5.bn3.num_batches_tracked
layer4.0.conv1.weight 512 1024 1 1
layer4.0.bn1.weight 512
layer4.0.bn1.bias 512
layer4.0.bn1.running_mean 512
layer4.0.bn1.running_var 512
layer4.0.bn1.num_batches_tracked
layer4.0.conv2.weight 512 512 3 3
layer4.0.bn2.weight 512
layer4.0.bn2.bias 512
layer4.0.bn2.running_mean 512
layer4.0.bn2.running_var 512
layer4.0.bn2.num_batches_tracked
layer4.0.conv3.weight 2048 512 1 1
layer4.0.bn3.weight 2048
layer4.0.bn3.bias 2048
layer4.0.bn3.running_mean 2048
layer4.0.bn3.running_var 2048
layer4.0.bn3.num_batches_tracked
layer4.0.downsample.0.weight 2048 1024 1 1
layer4.0.downsample.1.weight 2048
layer4.0.downsample.1.bias 2048
layer4.0.downsample.1.running_mean 2048
layer4.0.downsample.1.running_var 2048
layer4.0.downsample.1.num_batches_tracked
layer4.1.conv1.weight 512 2048 1 1
layer4.1.bn1.weight 512
layer4.1.bn1.bias 512
layer4.1.bn1.running_mean 512
layer4.1.bn1.running_var 512
layer4.1.bn1.num_batches_tracked
layer4.1.conv2.weight 512 512 3 3
layer4.1.bn2.weight 512
layer4.1.bn2.bias 512
layer4.1.bn2.running_mean 512
layer4.1.bn2.running_var 512
layer4.1.bn2.num_batches_tracked
layer4.1.conv3.weight 2048 512 1 1
layer4.1.bn3.weight 2048
layer4.1.bn3.bias 2048
layer4.1.bn3.running_mean 2048
layer4.1.bn3.running_var 2048
layer4.1.bn3.num_batches_tracked
layer4.2.conv1.weight 512 2048 1 1
layer4.2.bn1.weight 512
layer4.2.bn1.bias 512
layer4.2.bn1.running_mean 512
layer4.2.bn1.running_var 512
layer4.2.bn1.num_batches_tracked
layer4.2.conv2.weight 512 512 3 3
layer4.2.bn2.weight 512
layer4.2.bn2.bias 512
layer4.2.bn2.running_mean 512
layer4.2.bn2.running_var 512
layer4.2.bn2.num_batches_tracked
layer4.2.conv3.weight 2048 512 1 1
layer4.2.bn3.weight 2048
layer4.2.bn3.bias 2048
layer4.2.bn3.running_mean 2048
layer4.2.bn3.running_var 2048
layer4.2.bn3.num_batches_tracked
fc.weight 1000 2048
fc.bias 1000
"""
