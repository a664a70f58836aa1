"""tagless compare: the compare file, the seed statistics, resuming, failed runs, the CLI and the report.

Two variants (MoCo temperatures) x two seeds of the bundled demo_moco recipe shrunk to 32
digits at 16 px, 2 epochs of 2 steps: a run trains in well under a second."""

import json
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from tagless.cli import main
from tagless.compare import load_spec, mean_difference, mean_std, plan_runs, run_compare, runner
from tagless.config_io import to_dict
from tagless.errors import TaglessError

TINY = ["data.limit=32", "model.width=0.125", "views.global_size=16", "method.queue_size=32",
        "method.proj_hidden_dim=32", "method.proj_dim=16", "train.batch_size=16", "train.epochs=2",
        "train.knn_every_epochs=1", "train.log_every_steps=1"]
VARIANTS = [{"name": "t02", "set": ["method.temperature=0.2"]}, {"name": "t05", "set": ["method.temperature=0.5"]}]
METRICS = ["knn_top1", "wall_s", "images_per_s"]


def write_spec(folder: Path, out_dir: Path, **fields) -> Path:
    spec = {"name": "tiny", "out_dir": str(out_dir), "base": "demo_moco", "set": TINY, "seeds": [0, 1],
            "reference": "t02", "variants": VARIANTS} | fields
    path = Path(folder) / "cmp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """One finished comparison (4 real runs): (its root folder, its result)."""
    root = tmp_path_factory.mktemp("compare")
    result = run_compare(load_spec(write_spec(root, root / "runs")), progress=False)
    return root, result


@pytest.fixture
def copy(trained, tmp_path):
    """A private copy of the finished comparison and its compare file (tests may change it)."""
    shutil.copytree(trained[0] / "runs", tmp_path / "runs")
    return write_spec(tmp_path, tmp_path / "runs")


@pytest.fixture
def calls(monkeypatch):
    """Count (and record) compare's calls of train, which still trains for real."""
    seen = []
    real = runner.train

    def counting(cfg, resume=False, progress=True):
        seen.append((cfg.name, resume))
        return real(cfg, resume=resume, progress=False)

    monkeypatch.setattr(runner, "train", counting)
    return seen


def same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and
                                         (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))))


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# ---- statistics ------------------------------------------------------------------------
def test_mean_std_and_noise_verdict_by_hand():
    mean, std, n = mean_std([70.0, 72.0, 77.0, float("nan"), None])  # NaN / None are left out
    assert (mean, n) == (73.0, 3) and std == pytest.approx(statistics.stdev([70.0, 72.0, 77.0]))
    assert math.isnan(mean_std([5.0])[1]) and mean_std([])[2] == 0
    # a = [1, 3], b = [3, 5]: diff -2, s_a^2 = s_b^2 = 2, se = sqrt(2/2 + 2/2) = 1.414: within 2 se
    diff, se, verdict = mean_difference([1.0, 3.0], [3.0, 5.0])
    assert (diff, verdict) == (-2.0, "noise") and se == pytest.approx(math.sqrt(2.0))
    # a = [1, 2, 3], b = [4, 5, 6]: diff -3, se = sqrt(1/3 + 1/3) = 0.816: beyond 2 se
    diff, se, verdict = mean_difference([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert (diff, verdict) == (-3.0, "beyond noise") and se == pytest.approx(math.sqrt(2 / 3))
    assert mean_difference([1.0], [2.0, 3.0])[2] == "too few seeds"


# ---- the table -------------------------------------------------------------------------
def test_table_is_numpy_mean_and_std_of_the_runs_result_json(trained):
    root, result = trained
    out = root / "runs" / "tiny"
    per_run = {(v, s): json.loads((out / "runs" / f"{v}_s{s}" / "result.json").read_text())
               for v in ("t02", "t05") for s in (0, 1)}
    knn = {k: r["monitor"]["knn_top1"] for k, r in per_run.items()}
    assert len(set(knn.values())) > 1  # the seeds and variants differ, so the check below means something
    rows = {r["variant"]: r for r in result["table"]}
    for v in ("t02", "t05"):
        assert rows[v]["seeds"] == 2 and rows[v]["failed"] == 0
        for m in METRICS:
            vals = np.array([per_run[v, s]["monitor"][m] if m == "knn_top1" else per_run[v, s][m] for s in (0, 1)])
            assert rows[v][m] == pytest.approx(vals.mean()) and rows[v][f"{m} std"] == pytest.approx(vals.std(ddof=1))
    a = np.array([knn["t05", 0], knn["t05", 1]])
    b = np.array([knn["t02", 0], knn["t02", 1]])
    se = math.sqrt(a.var(ddof=1) / 2 + b.var(ddof=1) / 2)
    assert rows["t05"]["knn_top1 vs t02"] == pytest.approx(a.mean() - b.mean())
    assert rows["t05"]["knn_top1 verdict"] == ("beyond noise" if abs(a.mean() - b.mean()) > 2 * se else "noise")
    assert rows["t02"]["knn_top1 verdict"] == "reference"
    # the CSV holds the same numbers, the markdown the same rows
    import csv

    with open(out / "compare.csv") as f:
        csv_rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert float(csv_rows["t05"]["knn_top1"]) == pytest.approx(rows["t05"]["knn_top1"])
    md = (out / "compare.md").read_text().splitlines()
    assert md[0].startswith("| variant | seeds | knn_top1") and len(md) == 4 and md[3].startswith("| t05 |")


def test_every_run_shares_the_base_but_its_seed(tmp_path):
    runs = plan_runs(load_spec(write_spec(tmp_path, tmp_path / "runs")))
    assert [(r.variant, r.seed) for r in runs] == [("t02", 0), ("t05", 0), ("t02", 1), ("t05", 1)]
    cfgs = {(r.variant, r.seed): to_dict(r.cfg) for r in runs}
    for v in ("t02", "t05"):
        a, b = cfgs[v, 0], cfgs[v, 1]
        assert (a["seed"], b["seed"]) == (0, 1)
        assert {k: x for k, x in a.items() if k not in ("seed", "name")} == \
               {k: x for k, x in b.items() if k not in ("seed", "name")}  # data, labels, model: the same
    assert cfgs["t02", 0]["data"] == cfgs["t05", 1]["data"] and cfgs["t05", 0]["method"]["temperature"] == 0.5
    assert runs[1].run_dir == tmp_path / "runs" / "tiny" / "runs" / "t05_s0"


def test_a_variant_may_start_from_its_own_recipe(tmp_path):
    """variants[i].base: a baseline with another recipe (its views, its method) in the same table."""
    variants = [{"name": "moco", "set": []}, {"name": "simsiam", "base": "demo_simsiam", "set": []}]
    runs = plan_runs(load_spec(write_spec(tmp_path, tmp_path / "runs", variants=variants, reference="moco",
                                          set=[t for t in TINY if not t.startswith("method.")])))
    methods = {r.variant: r.cfg.method.name for r in runs}
    assert methods == {"moco": "moco", "simsiam": "simsiam"}
    assert {r.variant: r.cfg.views.global_scale for r in runs}["simsiam"] == (0.5, 1.0)  # demo_simsiam's views
    with pytest.raises(TaglessError, match="base: config not found: no_such_recipe"):
        load_spec(write_spec(tmp_path, tmp_path / "runs", variants=[{"name": "x", "base": "no_such_recipe"}],
                             reference="x"))


def test_the_command_line_set_wins_over_a_variants_and_the_file_set_does_not(tmp_path):
    path = write_spec(tmp_path, tmp_path / "runs", set=[*TINY, "method.temperature=0.1", "train.epochs=3"])
    runs = plan_runs(load_spec(path, overrides=["train.epochs=1"], seeds=[7]))
    assert [r.cfg.method.temperature for r in runs] == [0.2, 0.5]  # variant over file
    assert [(r.cfg.train.epochs, r.seed) for r in runs] == [(1, 7), (1, 7)]  # --set and --seeds over the file
    runs = plan_runs(load_spec(path, overrides=["method.temperature=0.3"]))
    assert {r.cfg.method.temperature for r in runs} == {0.3}


def test_only_keeps_the_named_variants_and_the_reference(tmp_path):
    variants = [*VARIANTS, {"name": "t09", "set": ["method.temperature=0.9"]}]
    path = write_spec(tmp_path, tmp_path / "runs", variants=variants, seeds=[0])
    assert [r.variant for r in plan_runs(load_spec(path, only=["t09"]))] == ["t02", "t09"]
    assert [r.variant for r in plan_runs(load_spec(path))] == ["t02", "t05", "t09"]
    with pytest.raises(TaglessError, match="--only: 'nope' is not a variant"):
        load_spec(path, only=["nope"])


# ---- resuming --------------------------------------------------------------------------
def test_a_second_invocation_trains_nothing_and_a_missing_result_retrains_only_that_run(copy, trained, calls):
    again = run_compare(load_spec(copy), progress=False)
    assert calls == []
    for new, old in zip(again["table"], trained[1]["table"]):
        assert all(same(new[k], old[k]) for k in old)
    (copy.parent / "runs" / "tiny" / "runs" / "t05_s1" / "result.json").unlink()
    third = run_compare(load_spec(copy), progress=False)
    assert calls == [("t05_s1", True)]  # its checkpoint is there: resumed, not restarted
    assert [r["status"] for r in third["runs"]] == ["reused", "reused", "reused", "resumed"]
    for new, old in zip(third["table"], trained[1]["table"]):
        assert new["knn_top1"] == pytest.approx(old["knn_top1"])


def test_a_changed_config_is_refused_unless_rerun(copy, calls):
    with pytest.raises(TaglessError, match=r"t02_s0 was trained with another config \(train.epochs: 2 -> 1\)"):
        run_compare(load_spec(copy, overrides=["train.epochs=1"]), progress=False)
    assert calls == []
    result = run_compare(load_spec(copy, overrides=["train.epochs=1"], seeds=[0]), rerun=True, progress=False)
    assert calls == [("t02_s0", False), ("t05_s0", False)]
    assert [r["status"] for r in result["runs"]] == ["trained", "trained"]
    assert json.loads((copy.parent / "runs/tiny/runs/t02_s0/result.json").read_text())["epochs"] == 1


def test_a_field_added_since_at_its_default_is_no_difference(copy, calls):
    """A run trained before a field existed (model.trainable, the probe section: absent from its
    config.yaml) is reused while the field keeps its default; a value that changes behaviour, or a
    key today's schema no longer knows, still makes it stale."""
    saved = copy.parent / "runs" / "tiny" / "runs" / "t02_s0" / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["model"]["trainable"], old["probe"]
    saved.write_text(yaml.safe_dump(old))
    result = run_compare(load_spec(copy), progress=False)
    assert calls == [] and [r["status"] for r in result["runs"]] == ["reused"] * 4
    with pytest.raises(TaglessError, match=r"t02_s0 was trained with another config \(model.trainable: 'all' -> "
                                           r"'layer3'\)"):
        run_compare(load_spec(copy, overrides=["model.trainable=layer3"]), progress=False)
    old["model"]["retired_field"] = 1
    saved.write_text(yaml.safe_dump(old))
    with pytest.raises(TaglessError, match=r"t02_s0 was trained with another config \(model.retired_field: 1 -> None"):
        run_compare(load_spec(copy), progress=False)
    assert calls == []


# ---- validation ------------------------------------------------------------------------
def test_a_typo_in_the_last_variant_fails_before_any_training(tmp_path, calls):
    variants = [*VARIANTS, {"name": "t09", "set": ["method.temperatur=0.9"]}]
    path = write_spec(tmp_path, tmp_path / "runs", variants=variants)
    with pytest.raises(TaglessError, match=r"cmp.yaml: variants\[2\].set \(t09\): .*method.temperatur"):
        run_compare(load_spec(path), progress=False)
    assert calls == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("fields, message", [
    ({"variants": [*VARIANTS, {"name": "t02", "set": []}]}, r"variants\[2\].name: duplicate variant name 't02'"),
    ({"variants": []}, r"variants: expected a non-empty list"),
    ({"seeds": [0, 0]}, r"seeds: expected a non-empty list of distinct integers"),
    ({"seeds": [-1]}, r"seeds: expected"),
    ({"seeds": [True]}, r"seeds: expected"),
    ({"set": ["train.epochs"]}, r"set: 'train.epochs' is not of the form key=value"),
    ({"set": ["seed=3"]}, r"set: 'seed=3': compare sets seed"),
    ({"variants": [{"name": "a", "set": ["loss"]}]}, r"variants\[0\].set: 'loss' is not of the form"),
    ({"variants": [{"name": "a b"}]}, r"variants\[0\].name: 'a b' must be"),
    ({"variants": [{"name": "a", "sett": []}]}, r"variants\[0\]: unknown key 'sett'"),
    ({"reference": "t03"}, r"reference: 't03' is not a variant"),
    ({"seed": [1]}, r"unknown key 'seed'"),
    ({"base": "no_such_recipe"}, r"base: config not found: no_such_recipe"),
    ({"metrics": []}, r"metrics: expected a non-empty list"),
])
def test_bad_compare_files_name_the_file_and_the_key(tmp_path, fields, message):
    path = write_spec(tmp_path, tmp_path / "runs", **fields)
    with pytest.raises(TaglessError, match=message) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_bad_common_override_is_blamed_on_set(tmp_path):
    with pytest.raises(TaglessError, match=r"cmp.yaml: set: .*train.epoks"):
        plan_runs(load_spec(write_spec(tmp_path, tmp_path / "runs", set=[*TINY, "train.epoks=1"])))


def test_a_missing_init_checkpoint_fails_before_any_training(tmp_path, calls):
    variants = [*VARIANTS, {"name": "ft", "set": [f"model.init_checkpoint={tmp_path}/none.pt"]}]
    with pytest.raises(TaglessError, match=r"variant ft: model.init_checkpoint .*none.pt does not exist"):
        run_compare(load_spec(write_spec(tmp_path, tmp_path / "runs", variants=variants)), progress=False)
    assert calls == []


def test_bundled_comparisons_load_and_plan():
    """The bundled compare files (configs/compare) resolve by name and every run config validates."""
    from tagless.compare import COMPARE_DIR

    names = sorted(p.stem for p in COMPARE_DIR.glob("*.yaml"))
    assert {"full_labels_scenes", "single_positive_scenes", "partial40_scenes", "moco_logo_scenes",
            "simsiam_logo_scenes"} <= set(names)
    for name in names:
        spec = load_spec(name)
        # mls_transfer: paper 000's two runs per benchmark (supp. A.3)
        assert len(spec.variants) >= 6 and spec.seeds == ([0, 1] if name == "mls_transfer" else [0, 1, 2])
        if name.endswith("logo_scenes"):  # the paper's ablation rows, each from its own base where it differs
            assert {v.name for v in spec.variants} >= {"logo", "logo_no_ll"} and spec.variants[0].base is not None


# ---- failed runs and the command line --------------------------------------------------
def test_a_failing_variant_is_reported_and_the_exit_status_is_non_zero(tmp_path, monkeypatch, capsys):
    real = runner.train

    def nan_for_t05(cfg, resume=False, progress=True):
        if cfg.name.startswith("t05"):
            raise TaglessError("loss is not finite (nan or inf) at step 1; stopping")
        return real(cfg, resume=resume, progress=False)

    monkeypatch.setattr(runner, "train", nan_for_t05)
    path = write_spec(tmp_path, tmp_path / "runs")
    assert main(["compare", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert "2 of 4 runs failed (first: t05 seed 0: loss is not finite" in captured.err
    assert [(f["variant"], f["seed"]) for f in result["failed"]] == [("t05", 0), ("t05", 1)]
    rows = {r["variant"]: r for r in result["table"]}
    assert (rows["t02"]["seeds"], rows["t02"]["failed"], rows["t05"]["seeds"], rows["t05"]["failed"]) == (2, 0, 0, 2)
    assert rows["t02"]["knn_top1"] is not None and rows["t05"]["knn_top1"] is None
    report = (tmp_path / "runs" / "tiny" / "report.html").read_text()
    assert "Failed runs" in report and "loss is not finite" in report


@pytest.mark.parametrize("argv", [["compare", "FILE", "--json"], ["--json", "compare", "FILE"]])
def test_cli_json_is_the_last_line_and_the_report_and_plots_exist(copy, calls, capsys, argv):
    assert main([str(copy) if a == "FILE" else a for a in argv]) == 0
    result = last_json(capsys)
    assert calls == [] and {"table", "runs", "dir", "failed"} <= set(result) and result["failed"] == []
    out = Path(result["dir"])
    assert out == copy.parent / "runs" / "tiny"
    report = (out / "report.html").read_text()
    assert '<a href="runs/t05_s1/">runs/t05_s1</a>' in report and "Base config" in report
    for name in ["curves.png"] + [f"bar_{m}.png" for m in METRICS]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f'src="{name}"' in report


def test_dry_run_lists_the_runs_and_trains_nothing(tmp_path, calls, capsys):
    path = write_spec(tmp_path, tmp_path / "runs")
    assert main(["compare", str(path), "--dry-run", "--seeds", "3", "--name", "quick", "--json"]) == 0
    result = last_json(capsys)
    assert [(r["variant"], r["seed"], r["status"]) for r in result["runs"]] == [("t02", 3, "new"), ("t05", 3, "new")]
    assert calls == [] and not (tmp_path / "runs").exists()


# ---- sweeps: every grid point runs, the point is chosen on validation ---------------------
ML_TINY = ["data.image_size=24", "views.global_size=16", "data.scene_count=100", "model.width=0.125",
           "train.batch_size=16", "train.epochs=3", "train.knn_every_epochs=1", "labels.mode=single_positive",
           "labels.val_fraction=0.25", "loss.name=an", "optim.name=adam", "optim.weight_decay=0"]


def sweep_spec(folder: Path, name: str, **fields) -> Path:
    spec = dict(name=name, base="multilabel_scenes", set=ML_TINY, seeds=[0], reference=None, metrics=["map_class"],
                sweep={"optim.lr": [1e-4, 1e-2]}, variants=[{"name": "an", "set": []}]) | fields
    return write_spec(folder, folder / "runs", **spec)


def test_a_sweep_runs_every_point_chooses_on_validation_and_resumes(tmp_path, monkeypatch):
    real, calls = runner.train, []

    def interrupted(cfg, resume=False, progress=True):
        calls.append(cfg.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, resume=resume, progress=False)

    monkeypatch.setattr(runner, "train", interrupted)
    spec = load_spec(sweep_spec(tmp_path, "sw"))
    with pytest.raises(KeyboardInterrupt):
        run_compare(spec, progress=False)
    result = run_compare(spec, progress=False)  # the first point is reused, the second trained
    assert calls == ["an_g0_s0", "an_g1_s0", "an_g1_s0"]
    runs = {r["point"]: r for r in result["runs"]}
    assert set(runs) == {"optim.lr=0.0001", "optim.lr=0.01"} and all(r["val"] is not None for r in runs.values())
    best = max(runs.values(), key=lambda r: r["val"])
    (chosen,) = result["chosen"]
    assert chosen["point"] == best["point"] and chosen["map_class"] == best["map_class"]
    assert result["table"][0]["map_class"] == pytest.approx(best["map_class"])
    md = (tmp_path / "runs" / "sw" / "compare.md").read_text()
    assert "chosen on val" in md and best["point"] in md
    html_page = (tmp_path / "runs" / "sw" / "report.html").read_text()
    assert "Grid points and their choice" in html_page and "validation.png" in html_page


def test_the_test_split_never_changes_the_chosen_point(tmp_path, monkeypatch):
    """Shuffle the TEST labels: every run's selected epoch and each variant's grid point stay."""
    from tagless.engine import trainer as trainer_module

    first = run_compare(load_spec(sweep_spec(tmp_path, "plain")), progress=False)
    real = trainer_module.build_dataset

    def shuffled(cfg, split="train"):
        ds = real(cfg, split)
        if split == "test":
            ds.targets = np.asarray(ds.targets)[np.random.default_rng(3).permutation(len(ds))]
        return ds

    monkeypatch.setattr(trainer_module, "build_dataset", shuffled)
    second = run_compare(load_spec(sweep_spec(tmp_path, "shuffled")), progress=False)
    assert [(r["point"], r["val"]) for r in first["runs"]] == [(r["point"], r["val"]) for r in second["runs"]]
    assert first["chosen"][0]["point"] == second["chosen"][0]["point"]
    assert first["chosen"][0]["map_class"] != second["chosen"][0]["map_class"]  # the test numbers did move
    with pytest.raises(TaglessError, match="validation split"):  # a sweep without one is refused up front
        plan_runs(load_spec(sweep_spec(tmp_path, "noval", set=[*ML_TINY, "labels.val_fraction=0"])))
    spec = load_spec(sweep_spec(tmp_path, "ontest", select="test"))  # only as a named protocol
    assert spec.select == "test"


def test_the_command_line_sweep_replaces_the_files(tmp_path):
    path = sweep_spec(tmp_path, "cli", sweep={"optim.lr": [1e-2, 1e-3, 1e-4], "train.batch_size": [8, 16]})
    assert len(load_spec(path).variants[0].grid()) == 6
    small = load_spec(path, sweep=["optim.lr=1e-3,1e-4"]).variants[0]
    assert small.sweep == {"optim.lr": [1e-3, 1e-4]} and small.grid() == [["optim.lr=0.001"], ["optim.lr=0.0001"]]
    assert load_spec(path, sweep=["none"]).variants[0].grid() == [[]]
    with pytest.raises(TaglessError, match="--sweep"):
        load_spec(path, sweep=["optim.lr"])
