"""The run configuration: one typed tree of sections, each owned by its subsystem.

``load_config(path, overrides)`` reads YAML, applies dotted ``key=value`` overrides and
validates strictly (see :mod:`tagless.config_io`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tagless import config_io
from tagless.augment import ViewsConfig
from tagless.config_io import Seed
from tagless.data import DataConfig
from tagless.data.label_modes import LabelsConfig
from tagless.engine.config import OptimConfig, TrainConfig
from tagless.errors import TaglessError
from tagless.eval.config import ProbeConfig
from tagless.files import check_folder_name
from tagless.losses.registry import LossConfig
from tagless.methods import METHODS, MethodConfig, MocoConfig
from tagless.models import ModelConfig


def default_loss() -> LossConfig:
    """BCE, the full-label baseline of papers 001 and 003."""
    return LossConfig.variants()["bce"]()


@dataclass
class RunConfig:
    name: str = "run"  # the run folder's name: letters, digits and _ . + -
    seed: Seed = 0
    out_dir: str = "runs"  # the run directory is out_dir/name
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MocoConfig)  # tagged union: {name: moco, <moco's fields>}
    labels: LabelsConfig = field(default_factory=LabelsConfig)  # full / partial / single-positive labels
    loss: LossConfig = field(default_factory=default_loss)  # tagged union; read by method multilabel
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)  # how `tagless eval linear --data RECIPE` scores it

    def validate(self) -> None:
        check_folder_name(self.name, "name")
        uses_loss = getattr(METHODS.get(self.method.name), "uses_loss", False)
        if not uses_loss and config_io.to_dict(self.loss) != config_io.to_dict(default_loss()):
            raise TaglessError(f"loss: method {self.method.name} has its own loss; the loss section is read by "
                               f"method.name=multilabel")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


CONFIG_DIR = Path(__file__).parent.parent / "configs"


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a bundled recipe (``demo_moco`` -> configs/demo_moco.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if bundled.is_file():
        return bundled
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise TaglessError(f"config not found: {name_or_path} (bundled: {', '.join(names)})")


def load_config(path: str | None = None, overrides: list[str] = ()) -> RunConfig:
    return config_io.load(RunConfig, resolve_config_path(path) if path else None, overrides)


def config_from_dict(data: dict) -> RunConfig:
    return config_io.from_dict(RunConfig, data)


def describe_section(section: str) -> dict[str, list[dict]]:
    """Tables ``{title: rows}`` of a section's fields with their defaults and comments, for
    ``tagless train --help-config SECTION``: a top-level section (data, views, model, method,
    optim, train, run), ``method.NAME`` for one method, or ``all``."""
    from tagless.augment import RECIPES, ViewsConfig
    from tagless.methods import METHODS

    def method_tables(names):
        return {f"method (name: {n})": config_io.describe(METHODS[n].Config) for n in names}

    def views_table():
        rows = config_io.describe(ViewsConfig)
        for row in rows:
            row["type"] = row["type"].replace(" | None", "")
            if row["key"] != "recipe":
                values = {r: config_io.to_dict(RECIPES[r][row["key"]]) for r in RECIPES}
                if len({str(v) for v in values.values()}) > 1:
                    row["default"] = ", ".join(f"{r}: {v}" for r, v in values.items())
        return {"views (unset fields take the recipe's value)": rows}

    plain = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig,
             "labels": LabelsConfig, "probe": ProbeConfig}
    if section in plain:
        return {section: config_io.describe(plain[section])}
    if section == "views":
        return views_table()
    if section == "method":
        return method_tables(METHODS)
    if section.startswith("method."):
        name = section.split(".", 1)[1]
        if name not in METHODS:
            raise TaglessError(f"--help-config: unknown method {name!r} (valid: {', '.join(METHODS)})")
        return method_tables([name])
    if section == "loss" or section.startswith("loss."):
        variants = LossConfig.variants()
        names = list(variants) if section == "loss" else [section.split(".", 1)[1]]
        if names[0] not in variants:
            raise TaglessError(f"--help-config: unknown loss {names[0]!r} (valid: {', '.join(variants)})")
        return {f"loss (name: {n})": config_io.describe(variants[n]) for n in names}
    if section == "run":
        return {"run": config_io.describe(RunConfig)}
    if section == "all":
        tables = {"run": config_io.describe(RunConfig)}
        for name in ("data", "views", "model", "method", "labels", "loss", "optim", "train", "probe"):
            tables.update(describe_section(name))
        return tables
    raise TaglessError(f"--help-config: unknown section {section!r} (valid: run, data, views, model, method, "
                       f"method.NAME, labels, loss, loss.NAME, optim, train, probe, all)")
