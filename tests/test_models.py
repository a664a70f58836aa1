"""Backbones, registry, per-layer pooling and heads of `tagless.models` (small inputs, CPU)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tagless.errors import TaglessError
from tagless.models import (
    BACKBONES,
    Backbone,
    CamClassifier,
    ModelConfig,
    MultiHead,
    alexnet,
    alexnet_small,
    backbone_kwargs,
    build_backbone,
    build_backbone_from_config,
    mlp,
    pooled_grid,
    pooled_layer_features,
    resnet18,
    resnet50,
)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded, and single-threaded: these models are tiny, and on a shared 2-core machine
    OpenMP threads spin-wait against other processes (a 5 ms forward can take 2 s)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- registry entries


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_forward_backward(name):
    model = build_backbone(name, stem="cifar", width=0.25)
    assert isinstance(model, Backbone)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, model.out_dim)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    feats = model.forward_features(x, model.layer_names)
    assert list(feats) == model.layer_names
    for layer, fmap in feats.items():
        assert fmap.shape[:2] == (4, model.layer_channels[layer])
        assert fmap.shape[2] == 32 // model.layer_strides[layer]


def test_expected_registry_names_and_out_dims():
    assert list(BACKBONES) == ["resnet18", "resnet34", "resnet50", "alexnet_small", "alexnet"]
    dims = {name: build_backbone(name, stem="cifar").out_dim for name in ("resnet18", "alexnet")}
    assert dims == {"resnet18": 512, "alexnet": 256 * 4 * 4}
    assert resnet50(width=0.25).out_dim == 512
    assert alexnet().out_dim == 9216


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(TaglessError, match="valid backbones: resnet18, resnet34, resnet50"):
        build_backbone("vgg16")
    with pytest.raises(TaglessError, match="zero_init_residual"):
        build_backbone("alexnet", zero_init_residual=True)
    with pytest.raises(TaglessError, match="stem"):
        build_backbone("resnet18", stem="tiny")
    with pytest.raises(TaglessError, match="width"):
        build_backbone("alexnet_small", width=0)


def test_config_kwargs_rebuild_the_same_module():
    cfg = ModelConfig(backbone="resnet18", stem="cifar", width=0.25, zero_init_residual=True)
    kwargs = backbone_kwargs(cfg)
    assert kwargs == {"stem": "cifar", "width": 0.25, "zero_init_residual": True}
    model = build_backbone_from_config(cfg)
    rebuilt = build_backbone(cfg.backbone, **kwargs)
    rebuilt.load_state_dict(model.state_dict())  # strict
    assert backbone_kwargs(ModelConfig(backbone="alexnet_small")) == {"stem": "cifar", "width": 1.0}
    assert ModelConfig() == ModelConfig("resnet18", "cifar", 1.0, False)


# ---------------------------------------------------------------- ResNet


def test_resnet18_cifar_feature_shapes_and_forward_is_pooled_layer4():
    model = resnet18(stem="cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x, ["layer1", "layer2", "layer3", "layer4", "stem"])
    shapes = {k: tuple(v.shape[1:]) for k, v in feats.items()}
    assert shapes == {
        "layer1": (64, 32, 32),
        "layer2": (128, 16, 16),
        "layer3": (256, 8, 8),
        "layer4": (512, 4, 4),
        "stem": (64, 32, 32),
    }
    assert list(feats) == ["layer1", "layer2", "layer3", "layer4", "stem"]  # requested order
    torch.testing.assert_close(model(x), feats["layer4"].mean(dim=(2, 3)))


def test_resnet_imagenet_stem_halves_twice():
    model = resnet18(stem="imagenet", width=0.25).eval()
    feats = model.forward_features(torch.randn(1, 3, 64, 64), model.layer_names)
    sizes = {k: tuple(v.shape[1:]) for k, v in feats.items()}
    assert sizes == {
        "stem": (16, 16, 16),
        "layer1": (16, 16, 16),
        "layer2": (32, 8, 8),
        "layer3": (64, 4, 4),
        "layer4": (128, 2, 2),
    }
    assert model.layer_strides == {"stem": 4, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


def test_forward_features_runs_only_as_far_as_needed():
    model = resnet18(stem="cifar", width=0.25)
    called = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(lambda *_, n=name: called.append(n))
    feats = model.forward_features(torch.randn(1, 3, 16, 16), "layer2")
    assert list(feats) == ["layer2"] and called == ["layer1", "layer2"]
    assert model.forward_features(torch.randn(1, 3, 16, 16), []) == {}
    with pytest.raises(TaglessError, match="valid layers: stem, layer1"):
        model.forward_features(torch.randn(1, 3, 16, 16), ["layer5"])


def test_bottleneck_widths_and_classifier():
    model = resnet50(stem="cifar", width=0.125, num_classes=7).eval()
    assert model.layer_channels == {"stem": 8, "layer1": 32, "layer2": 64, "layer3": 128, "layer4": 256}
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model.classify(x), model.fc(model(x)))
    with pytest.raises(TaglessError, match="num_classes"):
        resnet18(width=0.25).classify(x)


def test_width_rounds_and_stays_positive():
    assert resnet18(width=0.5).layer_channels["stem"] == 32
    assert resnet18(width=0.001).layer_channels["stem"] == 1
    assert resnet18(width=0.3).layer_channels["layer4"] == 19 * 8


def test_init_is_kaiming_fan_out_and_zero_init_residual():
    model = resnet50(width=0.5, zero_init_residual=True)
    w = model.layer4[0].conv2.weight  # 256 x 256 x 3 x 3
    expected_std = math.sqrt(2.0 / (w.shape[0] * 9))
    assert abs(w.std().item() / expected_std - 1) < 0.05
    assert torch.equal(model.bn1.weight, torch.ones_like(model.bn1.weight))
    assert all(block.bn3.weight.abs().sum() == 0 for stage in (model.layer1, model.layer4) for block in stage)
    assert model.layer1[0].bn2.weight.abs().sum() > 0
    plain = resnet18(width=0.25, zero_init_residual=True)
    assert all(block.bn2.weight.abs().sum() == 0 for block in plain.layer2)
    assert resnet18(width=0.25).layer2[0].bn2.weight.abs().sum() > 0


def test_channels_last_matches_contiguous():
    model = resnet18(stem="cifar", width=0.25).eval()
    x = torch.randn(2, 3, 16, 16)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, atol=1e-5, rtol=1e-4)
    net = alexnet_small(stem="cifar", width=0.25).eval()
    expected = net(x)
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x.to(memory_format=torch.channels_last)), expected, atol=1e-5, rtol=1e-4)


def test_torch_compile_fullgraph():
    """No graph breaks: forward and forward_features trace as one graph (eager backend: fast)."""
    for model in (resnet18(stem="cifar", width=0.25).eval(), alexnet_small(stem="cifar", width=0.25).eval()):
        x = torch.randn(2, 3, 16, 16)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), model(x))
        feats = torch.compile(model.forward_features, backend="eager", fullgraph=True)
        names = [model.layer_names[1], model.layer_names[3]]
        got = feats(x, names)
        ref = model.forward_features(x, names)
        for name in names:
            torch.testing.assert_close(got[name], ref[name])


# ---------------------------------------------------------------- AlexNet and per-layer pooling


def test_alexnet_imagenet_geometry_and_sela_probe_dims():
    model = alexnet().eval()
    assert [model.layer_channels[n] for n in model.layer_names] == [96, 256, 384, 384, 256]
    x = torch.randn(1, 3, 224, 224)
    feats = model.forward_features(x, model.layer_names)
    assert [tuple(f.shape[2:]) for f in feats.values()] == [(55, 55), (27, 27), (13, 13), (13, 13), (13, 13)]
    # SeLa / Zhang et al.: conv1..conv5 adaptive-max-pooled to 9600, 9216, 9600, 9600, 9216 dims.
    dims = [pooled_layer_features(f, 9600).shape[1] for f in feats.values()]
    assert dims == [9600, 9216, 9600, 9600, 9216]
    # The representation is the classic pool5 (3x3 stride-2 max-pool of conv5), 256 x 6 x 6.
    torch.testing.assert_close(model(x), F.max_pool2d(feats["conv5"], 3, 2).flatten(1))
    assert alexnet_small().layer_channels == {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256}


def test_alexnet_small_inputs():
    model = alexnet_small(stem="cifar", width=0.5).eval()
    for size in (32, 64, 8):
        feats = model.forward_features(torch.randn(2, 3, size, size), model.layer_names)
        assert [f.shape[2] for f in feats.values()] == [size, size // 2, size // 4, size // 4, size // 4]
        assert model(torch.randn(2, 3, size, size)).shape == (2, 128 * 4 * 4)
    assert alexnet(stem="cifar", out_grid=2).out_dim == 256 * 4
    with pytest.raises(TaglessError, match="valid layers: conv1"):
        model.forward_features(torch.randn(1, 3, 32, 32), ["layer4"])


def test_pooled_layer_features():
    fmap = torch.randn(2, 64, 20, 20)
    assert pooled_grid(64, 20, 20, 9600) == (12, 12)  # 64 * 144 = 9216 is the closest square grid
    out = pooled_layer_features(fmap, 9600)
    assert out.shape == (2, 64 * 12 * 12)
    torch.testing.assert_close(out, F.adaptive_max_pool2d(fmap, 12).flatten(1))
    avg = pooled_layer_features(fmap, 64 * 4, mode="avg")
    torch.testing.assert_close(avg, fmap.view(2, 64, 2, 10, 2, 10).mean((3, 5)).flatten(1))
    # Never upsamples: a 4x4 map gives at most C*16 dims; a huge C still gives a 1x1 grid.
    assert pooled_layer_features(torch.randn(1, 8, 4, 4), 9600).shape == (1, 8 * 16)
    assert pooled_layer_features(torch.randn(1, 20000, 3, 3), 9600).shape == (1, 20000)
    with pytest.raises(TaglessError, match="'max' or 'avg'"):
        pooled_layer_features(fmap, 100, mode="median")


# ---------------------------------------------------------------- heads


def _kinds(module):
    return [type(m).__name__ for m in module]


def test_mlp_recipes():
    moco = mlp(64, 64, 16, num_layers=2, bn=False)
    assert _kinds(moco) == ["Linear", "ReLU", "Linear"]
    assert moco.linear1.bias is not None and moco.linear2.bias is not None
    simsiam_proj = mlp(64, 64, 32, num_layers=3, bn=True, last_bn=True)
    assert _kinds(simsiam_proj) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    assert simsiam_proj.linear3.bias is None and not simsiam_proj.bn3.affine
    assert simsiam_proj.bn1.affine
    simsiam_pred = mlp(32, 8, 32, num_layers=2, bn=True)
    assert _kinds(simsiam_pred) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert simsiam_pred.linear1.out_features == 8 and simsiam_pred.linear2.bias is not None
    x = torch.randn(5, 64)
    assert moco(x).shape == (5, 16) and simsiam_proj(x).shape == (5, 32)
    assert simsiam_pred(simsiam_proj(x)).shape == (5, 32) and simsiam_pred.out_dim == 32
    single = mlp(64, 999, 10, num_layers=1, bn=True)
    assert _kinds(single) == ["Linear"] and single(x).shape == (5, 10)
    assert _kinds(mlp(4, 4, 4, bn=False, last_relu=True))[-1] == "ReLU"
    with pytest.raises(TaglessError):
        mlp(4, 4, 4, num_layers=0)


def test_multihead():
    head = MultiHead(32, [10, 10, 7])
    logits = head(torch.randn(6, 32))
    assert head.num_heads == 3 and [tuple(t.shape) for t in logits] == [(6, 10), (6, 10), (6, 7)]
    with pytest.raises(TaglessError):
        MultiHead(32, [])


def test_cam_classifier_logits_are_mean_of_cam():
    backbone = resnet18(stem="cifar", width=0.25).eval()
    fmap = backbone.forward_features(torch.randn(3, 3, 32, 32), ["layer4"])["layer4"]
    head = CamClassifier(backbone.layer_channels["layer4"], num_classes=5)
    logits, cam = head(fmap)
    assert cam.shape == (3, 5, 4, 4) and logits.shape == (3, 5)
    torch.testing.assert_close(logits, cam.mean(dim=(2, 3)))
    # ... which is the linear classifier on the globally pooled features.
    linear = nn.Linear(head.in_channels, 5)
    linear.weight.data.copy_(head.classifier.weight.flatten(1))
    linear.bias.data.copy_(head.classifier.bias)
    torch.testing.assert_close(logits, linear(fmap.mean((2, 3))))
