"""Progress bars (quiet when not a terminal), metrics.jsonl and optional TensorBoard."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm.auto import tqdm


def progress_bar(total: int, initial: int = 0, enabled: bool = True, desc: str = ""):
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False,
                disable=not enabled or not sys.stderr.isatty())


class MetricsLog:
    """Appends one JSON object per line to ``run_dir/metrics.jsonl`` (and TensorBoard)."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = False):
        self.enabled = enabled
        self.file = open(Path(run_dir) / "metrics.jsonl", "a") if enabled else None  # noqa: SIM115 - open until close()
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard is not installed (pip install tagless[tensorboard]); logging to metrics.jsonl only",
                      file=sys.stderr)
            else:
                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('split', 'train')}/{k}", v, record["step"])

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
