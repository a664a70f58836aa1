"""`tagless demo` end to end at a tiny size, from a relative output folder as `make demo` runs it."""

from tagless.cli import main


def test_demo_runs_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = ["data.limit=128", "model.width=0.125", "train.batch_size=64", "train.knn_every_epochs=1",
            "method.queue_size=128"]
    assert main(["demo", "--epochs", "1", *tiny]) == 0
    out = capsys.readouterr().out
    for row in ("raw pixels", "random init", "sela pre-trained"):
        assert row in out
    assert "moco pre-trained" not in out  # below random init at demo length: in the benchmarks instead
    assert "self-label NMI (%)" in out and "k-means NMI (%)" in out
    sp_table = out[out.index("single positive labels: digit_scenes"):]
    for row in ("untrained (random init)", "AN", "EN+SCL", "confident classes / image"):
        assert row in sp_table
    assert "benchmarks/ssl_scenes_table.py" in out and "MoCo-v2" in out  # where the methods left out are
    assert "the data section stored in" not in out  # the demo trained the runs it reports
    reports = sorted((tmp_path / "runs").glob("*/report.html"))
    assert len(reports) == 1
    sela_report = next(r for r in reports if "sela" in r.parent.name).read_text()
    assert "Self-labels" in sela_report and "clusters.png" in sela_report
