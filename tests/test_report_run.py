"""A run directory's report: metrics.jsonl reading, sections, and report.html end to end."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import make_blobs

from tagless.errors import TaglessError
from tagless.report import (
    load_metrics,
    multilabel_section,
    report_dir,
    single_label_section,
    training_section,
    training_summary,
    write_report,
)


def make_run(tmp_path, truncated=False) -> Path:
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    lines = []
    for step in range(1, 41):
        lines.append({"step": step, "epoch": step / 10, "split": "train", "loss": 3.0 - step / 20, "lr": 0.01})
        if step % 10 == 0:
            knn = [40.0, 71.25, 65.0, 70.0][step // 10 - 1]
            lines.append({"step": step, "epoch": step // 10, "split": "eval", "knn_top1": knn})
    text = "".join(json.dumps(r) + "\n" for r in lines)
    if truncated:
        text += '{"step": 41, "epoch": 4.1, "split": "tr'
    (run / "metrics.jsonl").write_text(text)
    (run / "config.yaml").write_text("name: demo\nseed: 0\ndata:\n  source: digits\nmethod:\n  name: moco\n"
                                     "model:\n  backbone: resnet18\ntrain:\n  epochs: 4\n  batch_size: 64\n")
    (run / "run_info.json").write_text(json.dumps({"device": "CPU (test)", "torch": "2.x"}))
    return run


def test_load_metrics(tmp_path):
    run = make_run(tmp_path)
    rows = load_metrics(run)
    assert len(rows) == 44 and rows[0]["step"] == 1 and rows[-1]["split"] == "eval"


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    run = make_run(tmp_path, truncated=True)
    with pytest.warns(UserWarning, match="truncated last line"):
        rows = load_metrics(run)
    assert len(rows) == 44 and rows[-1] == {"step": 40, "epoch": 4, "split": "eval", "knn_top1": 70.0}


def test_corrupt_middle_line_is_skipped(tmp_path):
    # a run killed mid-write and resumed: the next record is appended to the broken line
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo{"step": 2, "loss": 1.5}\n'
                                       '\n{"step": 3, "loss": 1.0}\n[1, 2]\n')
    with pytest.warns(UserWarning) as record:
        rows = load_metrics(run)
    assert [r["step"] for r in rows] == [1, 3]
    messages = [str(w.message) for w in record]
    assert any(":2: skipping a line that is not a JSON object" in m for m in messages)
    assert any(":5: skipping a truncated last line" in m for m in messages)


def test_missing_metrics_file_errors(tmp_path):
    with pytest.raises(TaglessError, match=r"metrics\.jsonl does not exist") as err:
        load_metrics(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(TaglessError, match="metrics.jsonl"):
        training_section(tmp_path)


def test_training_summary_and_section(tmp_path):
    run = make_run(tmp_path)
    summary = training_summary(load_metrics(run))
    assert summary["steps"] == 40 and summary["epochs"] == 4.0
    assert summary["final loss"] == pytest.approx(1.0) and summary["min loss"] == pytest.approx(1.0)
    assert summary["best knn_top1"] == 71.25 and summary["best knn_top1 epoch"] == 2
    assert summary["final knn_top1"] == 70.0
    section = training_section(run)
    assert section["title"] == "Training" and section["table"] == [summary]
    assert "method moco" in section["text"] and "device CPU (test)" in section["text"]
    png = Path(section["images"][0])
    assert png.parent == run / "report" and png.is_file()


def test_empty_metrics_gives_a_section_without_plots(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    section = training_section(tmp_path)
    assert section["images"] == [] and "no rows yet" in section["text"]


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.cells = [], []
        self._in_td = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self._in_td = tag in ("td", "th")

    def handle_data(self, data):
        if self._in_td:
            self.cells.append(data)


def test_write_report_end_to_end(tmp_path):
    run = make_run(tmp_path, truncated=True)
    out = report_dir(run)
    x, y = make_blobs(60, n_features=16, centers=3, random_state=0)
    pred = y.copy()
    pred[:6] = (pred[:6] + 1) % 3
    rng = np.random.default_rng(0)
    targets = (rng.random((50, 5)) < 0.3).astype(np.int8)
    targets[0] = -1
    scores = rng.standard_normal((50, 5)) + 2 * (targets == 1)
    with pytest.warns(UserWarning, match="truncated"):
        sections = [training_section(run)]
    sections.append(single_label_section("kNN <k=20>", x, y, pred, ["a", "b", "c"], out,
                                         [{"eval": "knn", "top1": 90.0}, {"eval": "linear", "top1": 93.333}]))
    sections.append(multilabel_section("Multi-label", scores, targets, list("vwxyz"), out, [{"mAP": 0.61234}]))
    path = write_report(run, sections)

    assert path == run / "report.html" and not (run / "report.html.tmp").exists()
    page = path.read_text()
    refs = _Refs()
    refs.feed(page)
    assert len(refs.srcs) == 1 + 2 + 2
    for src in refs.srcs:  # relative, next to the HTML, and real PNGs
        assert not src.startswith("/") and src.startswith("report/")
        with Image.open(run / src) as im:
            assert im.format == "PNG" and im.width > 200
    cells = set(refs.cells)
    assert {"93.33", "90.00", "0.612", "71.25", "70.00", "knn", "linear"} <= cells  # below 1: 3 significant digits
    assert "kNN &lt;k=20&gt;" in page and "<k=20>" not in page
    assert "Top-1 accuracy of these predictions: 90.00%" in page
    assert re.search(r"mAP@class \d+\.\d\d over the 5 classes", page)


def test_write_report_defaults_and_errors(tmp_path):
    run = make_run(tmp_path)
    path = write_report(run, title="My <run>")
    page = path.read_text()
    assert "<title>My &lt;run&gt;</title>" in page and 'src="report/training_curves.png"' in page
    embedded = write_report(run, embed=True).read_text()
    assert "data:image/png;base64," in embedded and 'src="report/' not in embedded
    with pytest.raises(TaglessError, match="image not found"):
        write_report(run, [{"title": "x", "images": ["report/nothing.png"]}])
    with pytest.raises(TaglessError, match="run directory not found"):
        write_report(tmp_path / "nope", [])


def test_sections_skip_optional_plots(tmp_path):
    s = single_label_section("probe", None, [0, 1, 1], None, ["a", "b"], tmp_path / "out")
    assert s["images"] == [] and s["table"] == [] and "3 test images, 2 classes" in s["text"]
