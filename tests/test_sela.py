"""SeLa (paper 002): the label-update schedule, the loss, the self-labelling step against an
independent Sinkhorn of the same logits, the K-means / random / prior / transfer switches, the
labels CSV, resume, and 2 processes against 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddp_helpers import run_in_processes
from run_helpers import records
from tagless.augment import build_views, eval_view, two_views
from tagless.engine import Trainer
from tagless.engine.epoch import EpochPass
from tagless.engine.run_config import load_config
from tagless.errors import TaglessError
from tagless.methods import Batch, DataInfo, SeLa, SelaConfig
from tagless.methods.sela import update_epochs
from tagless.methods.sela_labels import read_labels_csv, write_labels_csv
from tagless.models import build_backbone
from tagless.ot import sinkhorn

SETTINGS = dict(size=8, crop_fraction=1.0, mean=(0.5,) * 3, std=(0.25,) * 3)


def test_schedule_against_the_papers_formula():
    """t_i = (i / (M - 1))^2 x epochs, i = 0..M-1 (appendix A.1), as epochs; t = epochs dropped."""
    assert update_epochs(5, 100) == [0, 6, 25, 56]  # 0, 6.25, 25, 56.25, (100)
    for m, epochs in ((10, 30), (30, 30), (100, 400), (400, 400)):
        expected = sorted({int(np.floor((i / (m - 1)) ** 2 * epochs)) for i in range(m)} - {epochs})
        assert update_epochs(m, epochs) == expected
    assert update_epochs(1, 10) == [0] and update_epochs(0, 10) == []
    assert len(update_epochs(400, 400)) < 400  # early updates share epochs


def tiny_sela(n=40, heads=(4, 3), seed=0, **cfg):
    images = np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    data = DataInfo.from_arrays(images, np.arange(n) % 4, list("abcd"), "single")
    torch.manual_seed(seed)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    method = SeLa(backbone, build_views(two_views(global_size=8, flip_p=0.0)),
                  SelaConfig(head_clusters=list(heads), **cfg), data, seed=seed)
    return method, data


def test_initial_labels_are_balanced_and_loss_is_the_mean_over_heads_and_views():
    method, data = tiny_sela()
    for h, k in enumerate((4, 3)):
        counts = torch.bincount(method.labels[h], minlength=k)
        assert counts.max() - counts.min() <= 1  # i mod K, permuted
    index = torch.tensor([3, 7, 11, 20])
    batch = Batch(data.read(index), index, data.targets[index], 0, 0, torch.Generator().manual_seed(1))
    method.eval()  # BN statistics fixed, so the recomputation below sees the same network
    loss, _logs = method.step(batch)
    crops = method.views(batch.images, torch.Generator().manual_seed(1)).crops
    feats = method.trunk(torch.cat(crops))
    expected = np.mean([F.cross_entropy(head(feats), method.labels[h, index].repeat(2)).item()
                        for h, head in enumerate(method.heads.heads)])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _pass(method, data, epoch=0, epochs=10):
    return EpochPass(epoch, data, torch.device("cpu"), SETTINGS, seed=0, epochs=epochs)


def test_relabelling_equals_sinkhorn_of_the_heads_on_eval_features():
    method, data = tiny_sela(n=60, heads=(5, 3), lam=10.0, sinkhorn_tol=1e-10, sinkhorn_max_iters=10000)
    method.train()
    method.on_epoch_start(0, _pass(method, data))
    assert method.training  # the mode is restored
    with torch.no_grad():
        method.eval()
        feats = method.trunk(eval_view(data.read(np.arange(60)), **SETTINGS))
        for h, head in enumerate(method.heads.heads):
            ref = sinkhorn(head(feats).double(), lam=10.0, tol=1e-10, max_iters=10000, output="probs")
            assert torch.equal(method.labels[h], ref.labels)
            counts = torch.bincount(method.labels[h], minlength=head.out_features)
            assert counts.min() >= 0.5 * 60 / head.out_features  # near-equipartition of the hard labels
        ref0 = sinkhorn(method.heads.heads[0](feats).double(), lam=10.0, tol=1e-10, max_iters=10000, output="probs")
        assert torch.allclose(method.confidence.double(), ref0.probs.gather(1, ref0.labels[:, None]).squeeze(1),
                              atol=1e-6)
    logs = method.epoch_logs()
    assert logs["label_update_epoch"] == 0 and 0 <= logs["labels_changed"] <= 1
    assert method.pseudo_labels().shape == (60, 2)
    before = method.labels.clone()
    method.cfg.label_updates = 2  # t = 0 and 10 = the end of a 10-epoch run: epoch 0 only
    method.on_epoch_start(5, _pass(method, data, 5, epochs=10))
    assert method.epoch_logs() == {} and torch.equal(method.labels, before)


def test_kmeans_and_random_labellers():
    from tagless.methods.sela_labels import kmeans_labels

    method, data = tiny_sela(n=50, heads=(4,), labeller="kmeans")
    method.on_epoch_start(0, _pass(method, data))
    with torch.no_grad():
        method.eval()
        feats = method.trunk(eval_view(data.read(np.arange(50)), **SETTINGS))
    labels, _ = kmeans_labels(feats, 4, seed=0)
    assert torch.equal(method.labels[0], labels)
    rnd, data = tiny_sela(n=50, heads=(4,), labeller="random")
    start = rnd.labels.clone()
    rnd.on_epoch_start(0, _pass(rnd, data))
    assert torch.equal(rnd.labels, start)


def test_zipf_prior_shapes_the_cluster_sizes():
    """With lambda 25 the hard labels follow the zipf marginals (a small lambda, or the
    near-zero logits of heads initialised at N(0, 0.01), makes the plan so soft that its argmax
    no longer does: PyTorch's head init here)."""
    method, data = tiny_sela(n=300, heads=(5,), prior="zipf", prior_param=1.0, lam=25.0, sinkhorn_tol=1e-9,
                             sinkhorn_max_iters=20000, init_std=0.0)
    method.on_epoch_start(0, _pass(method, data))
    sizes = np.sort(np.bincount(method.labels[0].numpy(), minlength=5))[::-1]
    zipf = 300 * (1 / np.arange(1, 6)) / (1 / np.arange(1, 6)).sum()  # 131, 66, 44, 33, 26
    assert np.abs(sizes - zipf).max() < 0.25 * zipf.max()
    assert sizes[0] > 2 * sizes[-1]


def test_labels_csv_round_trip_and_errors(tmp_path):
    labels = np.array([[0, 1, 2, 0], [1, 1, 0, 0]])
    path = write_labels_csv(tmp_path / "l.csv", labels, ["a/x.png", "a/y.png", "b/z.png", "b/w.png"])
    assert path.read_text().splitlines()[:2] == ["index,path,head_0,head_1", "0,a/x.png,0,1"]
    np.testing.assert_array_equal(read_labels_csv(path, 4, [3, 2]), labels)
    np.testing.assert_array_equal(read_labels_csv(path, 4, [3]), labels[:1])
    with pytest.raises(TaglessError, match="2 head columns, the method needs 3"):
        read_labels_csv(path, 4, [3, 2, 2])
    with pytest.raises(TaglessError, match="head_0 label 2 outside 0..1"):
        read_labels_csv(path, 4, [2, 2])
    with pytest.raises(TaglessError, match="index 3 outside"):
        read_labels_csv(path, 3, [3, 2])
    with pytest.raises(TaglessError, match="no labels for 1 of 5"):
        read_labels_csv(path, 5, [3, 2])
    with pytest.raises(TaglessError, match="'a/x.png' in the CSV but"):
        read_labels_csv(path, 4, [3, 2], paths=["q.png", "y.png", "z.png", "w.png"])
    (tmp_path / "bad.csv").write_text("index,path,head_0\n0,,x\n")
    with pytest.raises(TaglessError, match="bad.csv:2"):
        read_labels_csv(tmp_path / "bad.csv", 1, [2])


TINY = ["data.source=digits", "data.image_size=8", "data.limit=96", "model.width=0.125", "views.global_size=8",
        "train.batch_size=16", "train.log_every_steps=1", "method.head_clusters=[10,6]", "method.label_updates=3",
        "train.knn_every_epochs=1"]


def sela_config(tmp_path, name, *extra):
    return load_config("sela_digits", [f"out_dir={tmp_path}", f"name={name}", *TINY, *extra])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny sela_digits run (3 epochs, heads [10, 6]) shared by the tests that read a run."""
    trainer = Trainer(sela_config(tmp_path_factory.mktemp("sela"), "run", "train.epochs=3"), progress=False)
    return trainer, trainer.run()


def test_training_labels_command_and_transfer(tiny_run, tmp_path, capsys):
    """A run logs pseudo-label NMI after re-labelling; `tagless labels RUN --json` writes the
    CSV and its NMI equals scikit-learn's; training from that CSV keeps its labels."""
    from sklearn.metrics import normalized_mutual_info_score

    from tagless.cli import main

    trainer, result = tiny_run
    evals = records(result.run_dir, "eval")
    assert set(result.monitor) == {"knn_top1", "pseudo_nmi"}  # the train table shows the monitor only
    assert all("pseudo_nmi" in r for r in evals) and "label_update_epoch" in evals[0]
    assert evals[0]["label_nmi"] == pytest.approx(evals[0]["pseudo_nmi"])  # after the epoch-0 re-labelling
    assert main(["labels", str(result.run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    csv_path = Path(out["file"])
    rows = [line.split(",") for line in csv_path.read_text().splitlines()]
    assert rows[0] == ["index", "path", "head_0", "head_1"] and len(rows) == 97 and rows[1][1] == ""
    head0 = np.array([int(r[2]) for r in rows[1:]])
    truth = trainer.train_set.targets
    assert out["heads"][0]["nmi"] == pytest.approx(100 * normalized_mutual_info_score(truth, head0), abs=1e-6)
    assert evals[-1]["pseudo_nmi"] == pytest.approx(out["heads"][0]["nmi"], abs=1e-6)
    # label_updates=-1 is the field's default (sela_digits sets 60): with labels_csv, "auto" means no re-labelling
    transfer = sela_config(tmp_path, "transfer", "train.epochs=2", f"method.labels_csv={csv_path}",
                           "method.label_updates=-1")
    t2 = Trainer(transfer, progress=False)
    t2.run()
    assert t2.method.cfg.updates() == 0 and torch.equal(t2.method.labels, trainer.method.labels)
    # an explicit M (TINY's 3 over 2 epochs: epoch 0 only) drops the update at epoch 0 on the untrained network
    keep = Trainer(sela_config(tmp_path, "transfer3", "train.epochs=2", f"method.labels_csv={csv_path}"),
                   progress=False)
    keep.run()
    assert keep.method.cfg.updates() == 3 and torch.equal(keep.method.labels, trainer.method.labels)
    assert "label_update_epoch" not in records(keep.run_dir, "eval")[0]


def test_report_of_a_sela_run_leads_with_its_labels(tiny_run):
    """The page opens with the labels (NMI table, cluster grid) before the frozen-feature
    tables; the per-head Sinkhorn curves and the cluster sizes sit folded at the end, out of
    the training curves and summary; every table scrolls inside its own box."""
    import re

    from tagless.report.from_run import report_run

    _, result = tiny_run
    page = Path(report_run(result.run_dir, device="cpu")["report"]).read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", page)
    assert titles[0] == "Self-labels" and titles.index("Self-labels") < titles.index("Frozen backbone on the held-out "
                                                                                     "split")
    assert titles[-2:] == ["Cluster sizes (head 0)", "Sinkhorn per head"]
    sections = dict(zip(titles, page.split("<h2>")[1:]))
    assert "NMI" in sections["Self-labels"] and "clusters.png" in sections["Self-labels"]
    assert "sinkhorn" not in sections["Training"]  # neither curves nor summary columns per head
    for title in ("Cluster sizes (head 0)", "Sinkhorn per head"):
        assert "<details>" in sections[title] and sections[title].index("<details>") < sections[title].index("<table")
    assert "sinkhorn_per_head.png" in sections["Sinkhorn per head"]
    sizes = sections["Cluster sizes (head 0)"]
    assert sizes.count("<tr>") == 2 and sizes.count("<th>") == 11  # 10 clusters on one row, not 10 rows
    assert page.count("<table>") == page.count('<div class="table-scroll"><table>') > 0


def test_cluster_size_table_stays_compact():
    from tagless.report.clusters import size_table

    sizes = np.arange(3000) % 7
    rows = size_table(sizes)
    assert len(rows) == 20 and all(len(r) == 11 for r in rows)  # the 100 largest and 100 smallest
    assert rows[0]["ranks"] == "1-10" and rows[-1]["ranks"] == "2991-3000" and rows[0]["+0"].endswith(": 6")


def test_labels_command_refuses_runs_without_labels(tmp_path):
    from run_helpers import tiny
    from tagless.commands.labels import export_labels
    from tagless.engine import train

    result = train(tiny(tmp_path, "moco", "train.epochs=1", "train.knn_every_epochs=0"), progress=False)
    with pytest.raises(TaglessError, match="keeps no per-image labels"):
        export_labels(result.run_dir)


def test_resume_restores_the_pseudo_labels(tmp_path):
    extra = ["train.epochs=3", "train.knn_every_epochs=0", "train.checkpoint_every_steps=4"]
    full = Trainer(sela_config(tmp_path, "full", *extra), progress=False)
    full.run()
    Trainer(sela_config(tmp_path, "part", *extra, "train.max_steps=8"), progress=False).run()  # stops mid epoch 2
    resumed = Trainer(sela_config(tmp_path, "part", *extra), resume=True, progress=False)
    resumed.run()
    for key in ("labels", "confidence", "beta"):
        assert torch.allclose(full.method.state_dict()[key].double(), resumed.method.state_dict()[key].double()), key


def _ddp_relabel(rank, world_size, out_dir):
    method, data = tiny_sela(n=37, heads=(5, 3), lam=10.0, sinkhorn_tol=1e-10, sinkhorn_max_iters=10000)
    method.on_epoch_start(0, _pass(method, data))
    torch.save({"labels": method.labels, "confidence": method.confidence}, Path(out_dir) / f"r{rank}.pt")


def test_relabelling_two_processes_equal_one(tmp_path):
    """37 images sharded 19 + 18: the distributed Sinkhorn and the gathers give every rank the
    labels one process computes."""
    run_in_processes(_ddp_relabel, 2, str(tmp_path))
    method, data = tiny_sela(n=37, heads=(5, 3), lam=10.0, sinkhorn_tol=1e-10, sinkhorn_max_iters=10000)
    method.on_epoch_start(0, _pass(method, data))
    for rank in range(2):
        got = torch.load(tmp_path / f"r{rank}.pt", weights_only=True)
        assert torch.equal(got["labels"], method.labels)
        assert torch.allclose(got["confidence"], method.confidence, atol=1e-6)


def test_label_updates_default_is_auto():
    assert SelaConfig().label_updates == -1 and SelaConfig().updates() == 100
    assert SelaConfig(labels_csv="x.csv").updates() == 0
    assert SelaConfig(labels_csv="x.csv", label_updates=5).updates() == 5
    SelaConfig(label_pass="train").validate()
    with pytest.raises(TaglessError, match="label_pass"):
        SelaConfig(label_pass="official").validate()
    with pytest.raises(TaglessError, match="hidden_dropout"):
        SelaConfig(hidden_dropout=1.0).validate()


def test_an_unconverged_solve_is_logged_and_warned_about_once():
    method, data = tiny_sela(n=60, heads=(5, 3), sinkhorn_tol=1e-12, sinkhorn_max_iters=2, label_updates=10)
    with pytest.warns(UserWarning, match="sinkhorn_max_iters=2") as caught:
        method.on_epoch_start(0, _pass(method, data))
        logs = method.epoch_logs()
        method.on_epoch_start(1, _pass(method, data, 1))
    assert sum("Sinkhorn stopped" in str(w.message) for w in caught) == 1
    assert logs["sinkhorn_converged_0"] == 0.0 and logs["sinkhorn_converged_1"] == 0.0
    assert method.epoch_logs()["sinkhorn_iters_0"] == 2
    ok, data = tiny_sela(n=60, heads=(5,), sinkhorn_tol=1e-6, sinkhorn_max_iters=10000)
    ok.on_epoch_start(0, _pass(ok, data))
    assert ok.epoch_logs()["sinkhorn_converged_0"] == 1.0


@pytest.mark.parametrize("label_pass, views", [("eval", 1), ("augmented", 2), ("train", 1)])
def test_label_logits_are_fp32_under_bf16_autocast(label_pass, views):
    """The engine runs the epoch pass (and may run the hook) under a bf16 autocast: the heads'
    logits that Sinkhorn raises to the power lambda are computed in fp32 all the same."""
    method, data = tiny_sela(n=40, heads=(4, 3), label_pass=label_pass, label_views=views, label_batch_size=16)
    seen = []
    for head in method.heads.heads:
        head.register_forward_hook(lambda m, i, out: seen.append((out.dtype, torch.is_autocast_enabled("cpu"))))
    ctx = EpochPass(0, data, torch.device("cpu"), SETTINGS, seed=0, amp=True, epochs=10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        method.on_epoch_start(0, ctx)
    assert seen and all(dtype == torch.float32 and not autocast for dtype, autocast in seen)


def test_train_label_pass_is_the_official_one():
    """label_pass=train: one training view per image, the network in train mode (BN batch
    statistics, updating the running averages), images read in a shuffled order in batches of
    label_batch_size, rows returned in index order; the mode is restored."""
    from tagless.augment.recipes import Views

    method, data = tiny_sela(n=50, heads=(4,), label_pass="train", label_batch_size=16)
    reads, modes = [], []
    read = data.read
    data.read = lambda idx: reads.append(np.asarray(idx).copy()) or read(idx)
    method.backbone.register_forward_hook(lambda m, i, o: modes.append(m.training))
    running = method.backbone.bn1.running_mean.clone()
    method.eval()
    method.on_epoch_start(0, _pass(method, data))
    assert not method.training and modes and all(modes)
    assert not torch.equal(running, method.backbone.bn1.running_mean)
    assert sorted(np.concatenate(reads).tolist()) == list(range(50)) and max(map(len, reads)) <= 17
    assert any((np.diff(r) != 1).any() for r in reads)  # shuffled, not contiguous blocks of the dataset
    # rows come back in index order: a fixed view and a per-image trunk give the eval pass's features
    method.views = lambda images, g: Views([images.float()], ["global"], [None], [None])
    method.trunk = lambda x: x.flatten(1)[:, :5]
    feats = method._features(_pass(method, data), "train")
    assert torch.equal(feats, data.read(np.arange(50)).float().flatten(1)[:, :5])


def test_alexnet_hidden_layers_dropout_and_official_init():
    """hidden_layers=2 is the official fc6-fc7: Dropout, Linear, ReLU, Dropout, Linear, ReLU;
    dropout is on in train mode only; Linear weights ~ N(0, 0.01) with zero bias (init_std)."""
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    data = DataInfo.from_arrays(images, np.arange(20) % 4, list("abcd"), "single")
    backbone = build_backbone("resnet18", stem="cifar", width=0.25)
    views = build_views(two_views(global_size=8, flip_p=0.0))
    method = SeLa(backbone, views, SelaConfig(head_clusters=[50, 30], hidden_layers=2, hidden_dim=256), data)
    kinds = [type(m).__name__ for m in method.hidden]
    assert kinds == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU"]
    assert all(m.p == 0.5 for m in method.hidden if isinstance(m, torch.nn.Dropout))
    x = torch.randn(4, backbone.out_dim)
    method.train()
    assert not torch.equal(method.hidden(x), method.hidden(x))
    method.eval()
    assert torch.equal(method.hidden(x), method.hidden(x))
    linears = [m for m in method.hidden if isinstance(m, torch.nn.Linear)] + list(method.heads.heads)
    for layer in linears:
        assert abs(float(layer.weight.detach().std()) - 0.01) < 0.001 and not layer.bias.any()
    plain = SeLa(backbone, views, SelaConfig(head_clusters=[50], hidden_layers=2, hidden_dim=256, hidden_dropout=0.0,
                                             init_std=0.0), data)
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.hidden.modules())
    assert abs(float(plain.heads.heads[0].weight.detach().std()) - 0.01) > 0.01  # PyTorch's default init


def test_paper_recipes_use_the_official_label_pass():
    """The recipes that claim the paper's / official settings label with the train-mode pass at
    their training batch; sela_digits keeps its tuned augmented-view labels."""
    for name in ("sela_imagenet_alexnet", "sela_imagenet_resnet50", "sela_cifar10", "sela_cifar100", "sela_svhn"):
        cfg = load_config(name, [])
        assert cfg.method.label_pass == "train" and cfg.method.label_views == 1, name
        assert cfg.method.label_batch_size == cfg.train.batch_size, name
        assert cfg.method.hidden_dropout == 0.5 and cfg.method.init_std == 0.01, name
    digits = load_config("sela_digits", []).method
    assert (digits.label_pass, digits.label_views) == ("augmented", 4)
