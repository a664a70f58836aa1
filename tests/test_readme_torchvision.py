"""The README's "Loading a backbone without tagless" snippets run, and say what they do.

torchvision does not import beside this CPU PyTorch, so the snippets run against a stand-in
`torchvision` module put in `sys.modules`. Its models are built from torchvision's state_dict
names and shapes written out literally (`RESNET18_STATE` of the names test; resnet50's list is
generated there by independent lines), never from tagless code, plus torchvision's stem layers
(7x7 stride-2 `conv1`, 3x3 stride-2 `maxpool`). Each snippet loads a real tagless checkpoint
written in `tmp_path`.
"""
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from tagless.checkpoint import FORMAT, save_atomic
from tagless.models import build_backbone
from test_models_resnet_names import RESNET18_STATE, _resnet50_state

README = Path(__file__).resolve().parent.parent / "README.md"
HEADING = "### Loading a backbone without tagless"
README_PATH = "runs/NAME/checkpoints/last.pt"
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


# ---- the README section -----------------------------------------------------------------
def _section_lines() -> list[str]:
    """The README lines after HEADING, up to the next heading outside a code fence."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert HEADING in lines, f"README has no line {HEADING!r}"
    section, fence = [], False
    for line in lines[lines.index(HEADING) + 1:]:
        if line.startswith("```"):
            fence = not fence
        elif line.startswith("#") and not fence:
            break
        section.append(line)
    assert not fence, "unclosed code fence in the README section"
    return section


def _section_blocks() -> list[str]:
    """The ```python blocks of the section."""
    blocks, current = [], None
    for line in _section_lines():
        if current is None and line.strip() == "```python":
            current = []
        elif current is not None and line.startswith("```"):
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _blocks() -> tuple[str, str, str]:
    blocks = _section_blocks()
    assert len(blocks) == 3, (
        f"expected 3 python blocks (ImageNet stem, CIFAR stem, width != 1) under {HEADING!r}, "
        f"got {len(blocks)}"
    )
    for block in blocks:
        assert README_PATH in block, f"a snippet does not load {README_PATH!r}:\n{block}"
    return blocks[0], blocks[1], blocks[2]


def _expected_output(block: str) -> str:
    """A snippet's last line is `# <what its print shows>`."""
    last = block.rstrip().splitlines()[-1]
    assert last.startswith("# "), f"snippet does not end with its expected output:\n{block}"
    return last[2:].strip()


# ---- the stand-in torchvision ------------------------------------------------------------
class _TorchvisionResNet(nn.Module):
    """Parameters and buffers under exactly torchvision's dotted names and shapes."""

    def __init__(self, state: list[tuple[str, tuple[int, ...]]]):
        super().__init__()
        for name, shape in state:
            *path, leaf = name.split(".")
            module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            if leaf == "num_batches_tracked":
                assert shape == ()
                module.register_buffer(leaf, torch.tensor(-1, dtype=torch.long))
            elif leaf in BUFFERS:
                module.register_buffer(leaf, torch.full(shape, float("nan")))
            else:
                module.register_parameter(leaf, nn.Parameter(torch.full(shape, float("nan"))))
        # torchvision's stem layers (torchvision/models/resnet.py, ResNet.__init__).
        assert self.conv1.weight.shape == (64, 3, 7, 7)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.constant_(self.conv1.weight, float("nan"))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        assert [(k, tuple(v.shape)) for k, v in self.state_dict().items()] == state
        self.load_results = []

    def load_state_dict(self, state_dict, strict=True, assign=False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.load_results.append(result)
        return result


@pytest.fixture
def torchvision(monkeypatch):
    built: list[_TorchvisionResNet] = []

    def factory(state):
        def build(*, weights=None, num_classes=1000):
            assert weights is None and num_classes == 1000
            model = _TorchvisionResNet(state)
            built.append(model)
            return model
        return build

    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.resnet18 = factory(RESNET18_STATE)
    tv.models.resnet50 = factory(_resnet50_state())
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
    tv.built = built
    return tv


# ---- helpers ------------------------------------------------------------------------------
def _checkpoint(tmp_path, stem: str, width: float = 1.0):
    """A tagless checkpoint (the trainer's keys) of a resnet18 with non-default BN stats."""
    kwargs = {"stem": stem, "width": width, "zero_init_residual": False}
    torch.manual_seed(0)
    bb = build_backbone("resnet18", **kwargs)
    with torch.no_grad():
        for name, t in bb.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith(("running_mean", "bias")):
                t.normal_()
            elif name.endswith(("running_var", "bn1.weight", "bn2.weight")):
                t.uniform_(0.5, 1.5)
    path = tmp_path / "runs" / "x" / "checkpoints" / "last.pt"
    save_atomic({"format": FORMAT, "backbone": bb.state_dict(), "backbone_name": "resnet18",
                 "backbone_kwargs": kwargs, "step": 0}, path)
    return path, bb.eval()


def _run(block: str, path: Path, capsys) -> str:
    code = block.replace(README_PATH, str(path))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_snippet"})
    return capsys.readouterr().out.strip()


def _assert_loaded(model: _TorchvisionResNet, bb: nn.Module) -> None:
    assert len(model.load_results) == 1
    result = model.load_results[0]
    assert result.missing_keys == ["fc.weight", "fc.bias"]
    assert result.unexpected_keys == []
    got = model.state_dict()
    for name, tensor in bb.state_dict().items():
        assert torch.equal(got[name], tensor), name
    assert torch.isnan(got["fc.weight"]).all()  # fc keeps its (stand-in) initialisation


def _assert_same_stem_geometry(model: _TorchvisionResNet, bb: nn.Module) -> None:
    """torchvision's conv1 -> maxpool computes what the tagless backbone's does."""
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = bb.maxpool(bb.conv1(x))
        theirs = model.maxpool(model.conv1(x))
    assert theirs.shape == ours.shape
    assert torch.allclose(theirs, ours)


# ---- tests --------------------------------------------------------------------------------
def test_section_has_the_three_snippets():
    imagenet, cifar, width = _blocks()
    assert "torchvision.models.resnet18()" in imagenet and "model.conv1" not in imagenet
    assert "model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)" in cifar
    assert "model.maxpool = torch.nn.Identity()" in cifar
    assert 'build_backbone(ckpt["backbone_name"], **ckpt["backbone_kwargs"])' in width


def test_standin_matches_the_literal_list(torchvision):
    model = torchvision.models.resnet18()
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == RESNET18_STATE
    assert len(RESNET18_STATE) == 122 and RESNET18_STATE[-2:] == [
        ("fc.weight", (1000, 512)), ("fc.bias", (1000,))]
    assert model.state_dict()["bn1.num_batches_tracked"].dtype == torch.long
    assert model.state_dict()["bn1.num_batches_tracked"].dim() == 0
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    assert model.state_dict()["conv1.weight"].shape == (64, 3, 3, 3)


def test_imagenet_stem_snippet(tmp_path, torchvision, capsys):
    imagenet, _, _ = _blocks()
    path, bb = _checkpoint(tmp_path, "imagenet")
    out = _run(imagenet, path, capsys)
    (model,) = torchvision.built
    _assert_loaded(model, bb)
    _assert_same_stem_geometry(model, bb)
    assert out == _expected_output(imagenet)


def test_cifar_stem_snippet(tmp_path, torchvision, capsys):
    _, cifar, _ = _blocks()
    path, bb = _checkpoint(tmp_path, "cifar")
    out = _run(cifar, path, capsys)
    (model,) = torchvision.built
    _assert_loaded(model, bb)
    _assert_same_stem_geometry(model, bb)
    assert isinstance(model.maxpool, nn.Identity)
    assert out == _expected_output(cifar)


def test_cifar_checkpoint_needs_the_two_lines(tmp_path, torchvision, capsys):
    """The ImageNet snippet (no adaptation) fails on a CIFAR-stem checkpoint."""
    imagenet, _, _ = _blocks()
    path, _ = _checkpoint(tmp_path, "cifar")
    with pytest.raises(RuntimeError, match=r"size mismatch for conv1\.weight"):
        _run(imagenet, path, capsys)


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_width_snippet_and_torchvision_refuses_it(tmp_path, torchvision, capsys, stem):
    imagenet, cifar, width = _blocks()
    path, _bb = _checkpoint(tmp_path, stem, width=0.25)
    out = _run(width, path, capsys)
    assert out == _expected_output(width)
    for block in (imagenet, cifar):
        with pytest.raises(RuntimeError, match=r"size mismatch for conv1\.weight"):
            _run(block, path, capsys)


def test_stated_cifar_difference_matches_tagless():
    """The README's sentence: CIFAR conv1 (64, 3, 3, 3) vs (64, 3, 7, 7), no max-pool."""
    prose = re.sub(r"```python.*?```", "", "\n".join(_section_lines()), flags=re.S)
    assert "(64, 3, 3, 3)" in prose and "(64, 3, 7, 7)" in prose and "max-pool" in prose
    cifar = build_backbone("resnet18", stem="cifar")
    imagenet = build_backbone("resnet18", stem="imagenet")
    assert tuple(cifar.conv1.weight.shape) == (64, 3, 3, 3)
    assert tuple(imagenet.conv1.weight.shape) == dict(RESNET18_STATE)["conv1.weight"]
    assert isinstance(cifar.maxpool, nn.Identity)
    assert list(cifar.state_dict()) == [k for k, _ in RESNET18_STATE[:-2]]
