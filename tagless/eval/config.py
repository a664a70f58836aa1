"""The ``probe`` section of a recipe: how ``tagless eval linear`` scores that recipe's data.

Transfer benchmarks fix their protocol with their data: paper 004 (LoGo, supp. 3 and Table 1)
fits L-BFGS on the l2-regularised cross-entropy for 5000 iterations and reports top-1 accuracy
on some datasets, mean-per-class accuracy (MPC) on others. A ``transfer_*`` recipe carries both,
so ``tagless eval linear --checkpoint CKPT --data transfer_dtd`` is the whole command; an option
given on the command line wins over the recipe's field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from tagless.config_io import AtLeastOne, Positive, Range
from tagless.errors import TaglessError

PROBE_METRICS = ("auto", "top1", "mean_per_class", "map_class", "map_sample")
PROTOCOLS = ("val", "best_on_test")


@dataclass
class ProbeConfig:
    """The linear probe on frozen features (``tagless eval linear | layers | map``).

    metric: the number reported and the L2 value chosen on: auto | top1 | mean_per_class | map_class | map_sample
    (auto: top1 for single labels, map_class for multi-label; mean_per_class is paper 004's MPC, Table 1).
    """

    metric: str = "auto"
    max_iter: AtLeastOne = 1000  # L-BFGS iterations per fit (paper 004: 5000)
    protocol: str = "val"  # val: L2 chosen on val_fraction of train, refit on all of it | best_on_test (paper 001)
    val_fraction: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.2  # protocol val's held-out share
    num_l2: AtLeastOne = 45  # L2 values in the sweep, log-spaced over l2_range (paper 001: 45)
    l2_range: tuple[Positive, Positive] = (1e-6, 1e5)  # min, max of the sweep (paper 001: 1e-6, 1e5)
    standardize: bool = False  # standardise features with the training split's statistics

    def validate(self) -> None:
        if self.metric not in PROBE_METRICS:
            raise TaglessError(f"probe.metric: expected one of {', '.join(PROBE_METRICS)}, got {self.metric!r}")
        if self.protocol not in PROTOCOLS:
            raise TaglessError(f"probe.protocol: expected val or best_on_test, got {self.protocol!r}")
        if not self.l2_range[0] <= self.l2_range[1]:
            raise TaglessError(f"probe.l2_range: need min <= max, got {list(self.l2_range)}")
