"""Training progress: a tqdm bar on a terminal (else a log line every few steps), metrics.jsonl, loss.png."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("pipeline.train")
LOSS_NAMES = {"mlm_loss": "MLM", "nsp_loss": "NSP", "contrastive_loss": "contrastive",
              "classify_loss": "classify", "tag_loss": "tag"}  # as progress shows them


def loss_keys(record: dict) -> list[str]:
    """The losses a metrics record holds, in LOSS_NAMES order."""
    return [key for key in LOSS_NAMES if key in record]


class Progress:
    """Reports each step; writes one JSON object per step to `metrics_path`."""

    def __init__(self, metrics_path: Path, start: int, total: int, log_every: int, enabled: bool = True,
                 unit: str = "pairs"):
        self.enabled, self.unit = enabled, unit
        self.log_every = log_every
        self.metrics = open(metrics_path, "a", encoding="utf-8") if enabled else None
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, record: dict) -> None:
        if not self.enabled:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        losses = " ".join(f"{LOSS_NAMES[key]} {record[key]:.3f}" for key in loss_keys(record))
        text = f"{losses} lr {record['lr']:.2e} {record['pairs_per_sec']:.1f} {self.unit}/s"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif record["step"] % self.log_every == 0 or record["step"] == 1:
            log.info("step %d: %s", record["step"], text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.metrics is not None:
            self.metrics.close()


def keep_metrics_until(metrics_path: Path, step: int) -> None:
    """Drop records after `step` (a resumed run rewrites them)."""
    if not metrics_path.exists():
        return
    lines = [line for line in metrics_path.read_text(encoding="utf-8").splitlines()
             if line.strip() and json.loads(line)["step"] <= step]
    metrics_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """The losses against step (MLM and NSP, like the seed's plot; or the contrastive loss)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        return
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for key, style in zip(loss_keys(records[-1]), ("-", "--")):
        ax.plot(steps, [r[key] for r in records], label=LOSS_NAMES[key].lower(), linestyle=style)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_xlim(1, max(steps[-1], 2))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png_path)
