"""CLI conventions: global flags after the subcommand, one-line errors."""

import json

import numpy as np
import pytest

from tagless.cli import build_parser, main


@pytest.mark.parametrize("argv", [
    ["--json", "eval", "knn", "--features", "F"],
    ["eval", "knn", "--features", "F", "--json"],
    ["eval", "--json", "knn", "--features", "F"],
    ["train", "demo_moco", "train.epochs=1", "--json"],
    ["report", "runs/x", "--json"],
    ["demo", "--json"],
])
def test_json_flag_anywhere(argv):
    args = build_parser().parse_args(argv)
    assert args.json is True and args.debug is False


def test_debug_after_subcommand_shows_the_traceback(tmp_path):
    from tagless.errors import TaglessError

    assert main(["eval", "knn", "--features", str(tmp_path / "none.npz")]) == 2
    with pytest.raises(TaglessError, match="features file not found"):
        main(["eval", "knn", "--features", str(tmp_path / "none.npz"), "--debug"])


def test_json_after_subcommand_prints_strict_json_last(tmp_path, capsys):
    r = np.random.default_rng(0)
    x, y = r.normal(size=(60, 4)).astype("float32"), r.integers(0, 3, 60)
    np.savez(tmp_path / "f.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    assert main(["eval", "knn", "--features", str(tmp_path / "f.npz"), "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["evaluator"] == "knn"


def test_tables_keep_small_and_large_numbers_readable():
    from tagless.tables import format_table

    text = format_table([{"l2": 0.0133, "acc": 12.5, "big": 2.5e7, "zero": 0.0, "n": 3, "none": None}])
    body = text.splitlines()[-1].split()
    assert body == ["0.0133", "12.50", "2.5e+07", "0.00", "3", "-"]
