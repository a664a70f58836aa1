"""Fine-tuning transfer (paper 002, Table 7: "fc6-8" vs "all"): ``model.init_checkpoint`` plus
``model.trainable``. A tiny MoCo run on digit scenes is the pre-trained backbone; a multi-label
classifier fine-tunes it on the same scenes' labels."""

import numpy as np
import pytest
import torch

from tagless.checkpoint import load_checkpoint
from tagless.engine import Trainer, train
from tagless.engine.run_config import load_config
from tagless.errors import TaglessError
from tagless.models import build_backbone
from tagless.models.trainable import FrozenBatchNorm2d, freeze

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SCENES = ["data.image_size=24", "views.global_size=16", "data.scene_count=80", "model.width=0.125",
          "train.batch_size=16", "train.knn_every_epochs=0", "optim.warmup_epochs=0"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    """The backbone of a one-epoch MoCo run on digit scenes (its BN statistics moved off 0 / 1)."""
    root = tmp_path_factory.mktemp("pretrain")
    cfg = load_config("moco_scenes", [f"out_dir={root}", "name=moco", *SCENES, "train.epochs=1",
                                      "method.queue_size=64", "method.proj_hidden_dim=32"])
    train(cfg, progress=False)
    return str(root / "moco" / "checkpoints" / "last.pt")


def _finetune(tmp_path, pretrained, name, trainable, epochs=2):
    cfg = load_config("multilabel_scenes", [f"out_dir={tmp_path}", f"name={name}", *SCENES, f"train.epochs={epochs}",
                                            f"model.init_checkpoint={pretrained}", f"model.trainable={trainable}"])
    return Trainer(cfg, progress=False)


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_head_leaves_every_backbone_tensor_bit_identical(tmp_path, pretrained):
    trainer = _finetune(tmp_path, pretrained, "head", "head")
    frozen_ids = {id(p) for p in trainer.backbone.parameters()}
    in_optimiser = [p for opt in trainer.optimizers.optimizers.values() for g in opt.param_groups for p in g["params"]]
    assert in_optimiser and not any(id(p) in frozen_ids for p in in_optimiser)
    head_before = {k: v.clone() for k, v in trainer.method.head.state_dict().items()}
    trainer.run()
    before = load_checkpoint(pretrained)["backbone"]
    after = load_checkpoint(tmp_path / "head" / "checkpoints" / "last.pt")["backbone"]
    assert list(after) == list(before)  # the same keys as a plain backbone (checkpoints load anywhere)
    assert _changed(before, after) == set()  # weights, BN weights/biases, running statistics, counters
    assert _changed(head_before, trainer.method.head.state_dict())  # the classifier did train


def test_from_a_block_on_freezes_only_the_blocks_below(tmp_path, pretrained):
    trainer = _finetune(tmp_path, pretrained, "layer3", "layer3", epochs=1)
    trainer.run()
    before = load_checkpoint(pretrained)["backbone"]
    after = load_checkpoint(tmp_path / "layer3" / "checkpoints" / "last.pt")["backbone"]
    changed = _changed(before, after)
    below = ("conv1.", "bn1.", "layer1.", "layer2.")
    assert not any(k.startswith(below) for k in changed)
    for block in ("layer3.", "layer4."):  # weights and BN statistics of the trained blocks move
        assert any(k.startswith(block) and k.endswith("conv1.weight") for k in changed)
        assert any(k.startswith(block) and k.endswith("running_mean") for k in changed)


def test_frozen_batchnorm_uses_running_statistics_in_train_mode():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = backbone.eval()(x)
    assert freeze(backbone, "head") == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    assert isinstance(backbone.bn1, FrozenBatchNorm2d)
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    with torch.no_grad():
        out = backbone.train()(x)
    torch.testing.assert_close(out, expected)  # eval-mode BN whatever the module's mode
    assert all(torch.equal(state[k], v) for k, v in backbone.state_dict().items())


def test_all_is_the_default_and_changes_nothing():
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    assert freeze(backbone, "all") == []
    assert all(p.requires_grad for p in backbone.parameters())
    assert load_config("multilabel_scenes").model.trainable == "all"


def test_an_unknown_block_is_a_one_line_error():
    with pytest.raises(TaglessError, match=r"model.trainable: 'layer9' is not all, head or a block of the backbone "
                                           r"\(stem, layer1, layer2, layer3, layer4\)"):
        load_config("multilabel_scenes", ["model.trainable=layer9"])
    with pytest.raises(TaglessError, match=r"\(conv1, conv2, conv3, conv4, conv5\)"):
        load_config("multilabel_scenes", ["model.backbone=alexnet_small", "model.trainable=layer3"])
    assert load_config("multilabel_scenes", ["model.backbone=alexnet_small", "model.trainable=conv5"])


# ---- single-label fine-tuning (paper 000's small-dataset transfer) -----------------------------
DIGITS = ["data.source=digits", "data.image_size=16", "data.limit=160", "views.global_size=16",
          "model.backbone=resnet18", "model.stem=cifar", "model.width=0.125", "train.batch_size=32",
          "train.epochs=1"]


def test_classifier_fine_tunes_single_labels_and_reports_top1(tmp_path, pretrained):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from tagless.engine.classifier_eval import checkpoint_test_scores, load_classifier

    cfg = load_config("mls_finetune", [f"out_dir={tmp_path}", "name=cls", *DIGITS,
                                       f"model.init_checkpoint={pretrained}", "model.trainable=head"])
    result = train(cfg, progress=False)
    assert set(result.test) == {"top1", "mean_per_class"}
    ckpt = tmp_path / "cls" / "checkpoints" / "last.pt"
    loaded, model = load_classifier(ckpt)  # the checkpoint's own classifier, as tagless eval reads it
    test, scores = checkpoint_test_scores(model, loaded, cfg.data)
    pred, y = scores.argmax(1).numpy(), np.asarray(test.targets)
    assert result.test["top1"] == pytest.approx(100 * accuracy_score(y, pred), abs=1e-6)
    assert result.test["mean_per_class"] == pytest.approx(100 * balanced_accuracy_score(y, pred), abs=1e-6)
    assert not (tmp_path / "cls" / "test_scores.npz").exists()  # the multi-label score panels' file
    before = load_checkpoint(pretrained)["backbone"]
    assert _changed(before, load_checkpoint(ckpt)["backbone"]) == set()


def test_classifier_needs_single_labels(tmp_path):
    cfg = load_config("multilabel_scenes", [f"out_dir={tmp_path}", "name=x", *SCENES, "method.name=classifier"])
    with pytest.raises(TaglessError, match="method classifier needs single-label data"):
        Trainer(cfg, progress=False)


def test_mls_transfer_runs_every_benchmark_twice(tmp_path):
    """Paper 000, supp. A.1 / A.3: VOC2007 (mAP) and seven small datasets (top-1), 2 runs each."""
    from tagless.compare.runner import plan_runs
    from tagless.compare.spec import load_spec

    init = tmp_path / "pretrained.pt"
    init.write_bytes(b"")
    spec = load_spec("mls_transfer", overrides=[f"model.init_checkpoint={init}"])
    assert spec.seeds == [0, 1] and spec.metrics == ["top1", "map_class"]
    plan = plan_runs(spec)
    names = ["voc07", "cub200", "flowers", "cars", "aircraft", "indoor67", "pets", "dtd"]
    assert [r.variant for r in plan] == names * 2
    for run in plan:
        assert run.cfg.model.backbone == "resnet50" and run.cfg.model.trainable == "all"
        assert run.cfg.method.name == ("multilabel" if run.variant == "voc07" else "classifier")


@pytest.mark.parametrize(("name", "trainable"), [("voc07_finetune_head", "head"), ("voc07_finetune_all", "all")])
def test_voc07_recipes(name, trainable):
    cfg = load_config(name)
    assert cfg.model.trainable == trainable and cfg.method.name == "multilabel"
    assert (cfg.data.source, cfg.data.train_split_name, cfg.data.test_split_name) == ("voc", "trainval", "test")
    assert cfg.model.backbone == "alexnet"  # paper 002's Table 7 network
