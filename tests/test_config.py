"""Typed config: YAML + dotted overrides, strict validation with one-line errors."""

from dataclasses import dataclass, field

import pytest

from tagless import config_io
from tagless.errors import TaglessError


@dataclass
class Inner:
    lr: float = 0.1
    sizes: tuple[int, int] = (1, 2)
    names: list[str] = field(default_factory=list)
    flag: bool = False


@dataclass
class Outer:
    name: str = "x"
    steps: int = 3
    inner: Inner = field(default_factory=Inner)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ninner:\n  lr: 1\n  sizes: [3, 4]\n")
    cfg = config_io.load(Outer, path, ["inner.names=[p, q]", "steps=7", "inner.flag=true"])
    assert config_io.load(Outer, None, ["inner.lr=1e-4"]).inner.lr == 1e-4  # YAML 1.1 reads this as a string
    assert cfg.name == "a" and cfg.steps == 7
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.sizes == (3, 4) and cfg.inner.names == ["p", "q"] and cfg.inner.flag is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("inner.lrr=0.1", "unknown config key 'inner.lrr'"),
        ("bogus=1", "unknown config key 'bogus'"),
        ("inner.lr=fast", "inner.lr: expected float"),
        ("steps=1.5", "steps: expected int"),
        ("inner.flag=3", "inner.flag: expected true or false"),
        ("inner.sizes=[1]", "inner.sizes: expected 2 values"),
        ("inner=5", "inner: expected a mapping"),
        ("steps", "not of the form key=value"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(TaglessError) as e:
        config_io.load(Outer, None, [override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(TaglessError, match="not valid YAML"):
        config_io.load(Outer, path)
    with pytest.raises(TaglessError, match="not found"):
        config_io.load(Outer, tmp_path / "missing.yaml")


def test_round_trip(tmp_path):
    cfg = config_io.load(Outer, None, ["inner.sizes=[5, 6]"])
    config_io.save(cfg, tmp_path / "out.yaml")
    assert config_io.load(Outer, tmp_path / "out.yaml") == cfg


def test_run_config_bundled_recipes_validate():
    from tagless.engine.run_config import CONFIG_DIR, load_config

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"demo_moco", "demo_simsiam", "sela_digits", "sela_cifar10", "sela_imagenet_alexnet"} <= set(names)
    for name in names:  # every bundled recipe loads and validates
        cfg = load_config(name)
        assert cfg.name == name
    with pytest.raises(TaglessError, match="method.name"):
        load_config("demo_moco", ["method.name=byol"])
    with pytest.raises(TaglessError, match="config not found"):
        load_config("no_such_recipe")


def test_method_section_is_a_tagged_union(tmp_path):
    """``method: {name: X, <X's fields>}``: only the active method's fields are accepted and
    saved; an unknown key lists that method's valid keys in one line."""
    from tagless.engine.run_config import load_config
    from tagless.methods import MocoConfig, SimSiamConfig

    cfg = load_config("demo_moco", ["method.queue_size=512"])
    assert isinstance(cfg.method, MocoConfig) and cfg.method.queue_size == 512 and cfg.method.temperature == 0.2
    sim = load_config(None, ["method.name=simsiam", "method.proj_layers=2"])
    assert isinstance(sim.method, SimSiamConfig) and sim.method.proj_layers == 2
    with pytest.raises(TaglessError) as e:
        load_config(None, ["method.name=simsiam", "method.queue_size=8"])
    msg = str(e.value)
    assert "method.queue_size" in msg and "simsiam" in msg and "proj_layers" in msg and "\n" not in msg
    config_io.save(cfg, tmp_path / "c.yaml")
    saved = config_io.read_yaml(tmp_path / "c.yaml")["method"]
    assert saved["name"] == "moco" and "queue_size" in saved and "proj_layers" not in saved
    assert not any(isinstance(v, dict) for v in saved.values())  # no section per method
    assert load_config(str(tmp_path / "c.yaml")) == cfg


def test_older_nested_method_sections_still_load():
    from tagless.engine.run_config import config_from_dict

    cfg = config_from_dict({"method": {"name": "moco", "moco": {"queue_size": 64}, "simsiam": {"proj_dim": 8}}})
    assert cfg.method.queue_size == 64


def test_help_config_lists_fields_defaults_and_comments(capsys):
    from tagless.cli import main

    assert main(["train", "--help-config", "method.moco"]) == 0
    out = capsys.readouterr().out
    assert "queue_size" in out and "65536" in out and "K" in out
    assert main(["train", "--help-config", "views", "--json"]) == 0
    import json

    tables = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sections"]
    rows = {r["key"]: r for r in next(iter(tables.values()))}
    assert "logo: 2" in str(rows["num_local"]["default"]) and rows["global_size"]["help"]
    assert main(["train", "--help-config", "nope"]) == 2


def test_switching_method_by_override_drops_the_recipe_method_fields():
    from tagless.engine.run_config import load_config
    from tagless.methods import SimSiamConfig

    cfg = load_config("demo_moco", ["method.name=simsiam", "method.proj_layers=2"])
    assert isinstance(cfg.method, SimSiamConfig) and cfg.method.proj_layers == 2
    assert cfg.method.proj_dim == SimSiamConfig().proj_dim  # simsiam's defaults, not the recipe's moco fields
    with pytest.raises(TaglessError, match="method.queue_size"):
        load_config("demo_moco", ["method.name=simsiam", "method.queue_size=5"])


def test_on_and_off_stay_words_in_string_fields():
    """YAML 1.1 reads `off` as False: `train.amp=off` (a documented value) must still load."""
    from tagless.engine.run_config import load_config

    cfg = load_config("demo_moco", ["train.amp=off", "train.channels_last=on"])
    assert cfg.train.amp == "off" and cfg.train.channels_last == "on"
