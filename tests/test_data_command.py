"""`tagless data`: its facts against counts computed here, its flags on crafted bad datasets
(and silence on good ones), its report files, and the one-line summary a run prints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tagless.cli import main
from tagless.data import DataConfig, build_dataset


def run_json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1]), "\n".join(out[:-1])


def png(path, size=(12, 12), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)


def test_facts_of_digit_scenes_match_independent_counts(tmp_path, capsys):
    out = tmp_path / "rep" / "data_report.html"
    facts, text = run_json(capsys, ["data", "data.source=digit_scenes", "data.image_size=32", "data.scene_count=300",
                                    f"data.cache_dir={tmp_path / 'cache'}", "--out", str(out), "--json"])
    cfg = DataConfig(source="digit_scenes", image_size=32, scene_count=300, cache_dir=str(tmp_path / "cache"))
    for split in ("train", "test"):
        ds = build_dataset(cfg, split)
        t = np.asarray(ds.targets)
        f = facts["splits"][split]
        assert f["images"] == len(ds)
        assert list(f["class_counts"].values()) == (t == 1).sum(0).tolist()
        per = (t == 1).sum(1)
        assert f["labels_per_image"]["mean"] == pytest.approx(per.mean())
        assert f["labels_per_image"]["histogram"] == {str(k): int((per == k).sum()) for k in np.unique(per)}
        assert f["boxes_per_image"]["mean"] == pytest.approx(np.mean([len(b) for b in ds.boxes]))
        assert sum(f["object_sizes"].values()) == int((t == 1).sum())  # every positive has a box
        assert f["unknown_share"] == 0 and f["skipped"] == []
    assert facts["label_kind"] == "multi" and facts["classes"] == [str(i) for i in range(10)]
    assert facts["flags"] == []
    assert out.is_file() and {p.name for p in (out.parent / "data_report_files").iterdir()} == {
        "samples.png", "class_counts.png", "boxes.png"}
    assert "no flags" in text and "labels per image (train)" in text


def test_image_folder_facts_skipped_files_and_cache(tmp_path, capsys):
    for c, n in (("cat", 5), ("dog", 3)):
        for i in range(n):
            png(tmp_path / "imgs" / "train" / c / f"{i}.png")
        png(tmp_path / "imgs" / "test" / c / "0.png")
    (tmp_path / "imgs" / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    facts, text = run_json(capsys, ["data", "data.source=image_folder", f"data.root={tmp_path / 'imgs'}",
                                    "data.image_size=8", f"data.cache_dir={tmp_path / 'cache'}", "--out", "", "--json"])
    train = facts["splits"]["train"]
    assert train["class_counts"] == {"cat": 5, "dog": 3} and facts["splits"]["test"]["images"] == 2
    assert [p.endswith("broken.png") for p in train["skipped"]] == [True]
    assert "broken.png" in text  # listed, not only counted
    assert facts["cache"]["entries"] and facts["cache"]["bytes"] > 0
    assert train["source_sizes"] == {"min": [12, 12], "max": [12, 12], "aspect_min": 1.0, "aspect_max": 1.0}


def flags_of(capsys, *overrides):
    facts, _ = run_json(capsys, ["data", *overrides, "--out", "", "--json"])
    return " | ".join(f["flag"] for f in facts["flags"]), facts


def test_flags_fire_on_bad_data(tmp_path, capsys):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    # space-separated labels read with ';': every combination becomes a class
    rows = ["path,labels"] + [f"i{i}.png,{' '.join(map(str, sorted({i % 10, (3 * i) % 10, (7 * i + 1) % 10})))}"
                              for i in range(40)]
    for i in range(40):
        png(tmp_path / "csv" / f"i{i}.png")
    (tmp_path / "csv" / "l.csv").write_text("\n".join(rows) + "\n")
    text, _ = flags_of(capsys, "data.source=csv", f"data.csv_path={tmp_path / 'csv' / 'l.csv'}",
                       "data.label_separator=;", "data.image_size=8", cache)
    assert "classes for" in text and "separator of another convention" in text
    # a folder whose only class is a split name
    for i in range(6):
        png(tmp_path / "split" / "test" / f"{i}.png")
    text, facts = flags_of(capsys, "data.source=image_folder", f"data.root={tmp_path / 'split'}", "data.image_size=8",
                           cache)
    assert "a single class, named 'test'" in text
    assert "one level down" in " ".join(f["fix"] for f in facts["flags"])
    # a class with one image, and images of very different sizes
    for i in range(6):
        png(tmp_path / "mixed" / "a" / f"{i}.png", size=(64, 16))
        png(tmp_path / "mixed" / "b" / f"{i}.png", size=(10, 10))
    png(tmp_path / "mixed" / "c" / "0.png")
    text, _ = flags_of(capsys, "data.source=image_folder", f"data.root={tmp_path / 'mixed'}", "data.image_size=8",
                       "data.test_fraction=0.0", cache)
    assert "class 'c' has a single image" in text and "very different sizes" in text
    # an empty split: every row of a split column is train
    rows = ["path,labels,split"] + [f"i{i}.png,{i % 2},train" for i in range(20)]
    (tmp_path / "csv" / "s.csv").write_text("\n".join(rows) + "\n")
    text, _ = flags_of(capsys, "data.source=csv", f"data.csv_path={tmp_path / 'csv' / 's.csv'}", "data.image_size=8",
                       cache)
    assert "the test split is empty" in text


def test_flags_stay_silent_on_good_data(tmp_path, capsys):
    for overrides in (["data.source=digits", "data.image_size=8"],
                      ["data.source=digit_scenes", "data.image_size=32", "data.scene_count=300"]):
        text, _ = flags_of(capsys, *overrides, f"data.cache_dir={tmp_path / 'cache'}")
        assert text == ""


def test_a_run_starts_with_a_one_line_data_summary(tmp_path, capsys):
    from run_helpers import TINY

    assert main(["train", "demo_moco", f"out_dir={tmp_path}", "name=r", *TINY, "train.epochs=1",
                 "train.knn_every_epochs=0"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "data: digits, 160 train images at 16 px, single-label, 10 classes"
