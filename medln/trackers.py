"""Experiment trackers, the transformers way: `--report-to none|tensorboard|trackio|mlflow|wandb`.

A tracker mirrors a run's records (medln.train.EVENTS) as they are made: the config and the
parameter counts once, then per step `train/loss`, `train/learning_rate`, throughput and
memory, and at the end the base and tuned metrics of every evaluation split as
`eval/<base|tuned>/<split>/<metric>` (transformers' TrainingArguments.report_to names the same
integrations). The run folder's own metrics.jsonl and eval.json stay the source of truth: a
tracker only shows them somewhere else, and one that fails never fails the run's files.

Each tracker is an optional import: `check()` refuses a missing one in one line (with its
pip command) before anything loads. Only the main process of a distributed run reports
(train_run opens a tracker where it writes the run folder). Where each writes:

  tensorboard  event files in RUN/tensorboard/ (`tensorboard --logdir RUN`, or a sweep's folder)
  trackio      its local store ($TRACKIO_DIR, default ~/.cache/huggingface/trackio), project
               $MEDLN_TRACKER_PROJECT or "medln"; `trackio show` opens the dashboard
  mlflow       $MLFLOW_TRACKING_URI (default ./mlruns), experiment $MLFLOW_EXPERIMENT_NAME
  wandb        RUN/wandb/; online unless WANDB_MODE=offline; project $WANDB_PROJECT or "medln"
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

PROJECT_ENV = "MEDLN_TRACKER_PROJECT"


class TrackerError(ValueError):
    """A tracker that cannot be used as asked (unknown, or not installed); one line."""


class Tracker:
    """What every tracker does: it is opened with the run's config, logs scalars at a step, closes."""

    def log(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    def __init__(self, run_dir: Path, name: str, group: str | None, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```json\n" + json.dumps(config, indent=1, default=str) + "\n```", 0)

    def log(self, values, step):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self):
        self.writer.close()


def _quiet():
    """Trackers that announce themselves on stdout would break `--json` (one record a line):
    their words go to stderr."""
    return contextlib.redirect_stdout(sys.stderr)


class Trackio(Tracker):
    def __init__(self, run_dir, name, group, config):
        import trackio

        self.trackio = trackio
        with _quiet():
            self.run = trackio.init(project=os.environ.get(PROJECT_ENV, "medln"), name=name, group=group,
                                    config=config, embed=False)

    def log(self, values, step):
        self.run.log(metrics=values, step=step)

    def close(self):
        with _quiet():
            self.trackio.finish()  # also clears trackio's current run: its exit hook would finish it again, on stdout


class MLflow(Tracker):
    def __init__(self, run_dir, name, group, config):
        import mlflow

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=name, tags={"medln.run": str(run_dir), **({"medln.group": group}
                                                                                      if group else {})})
        # Parameters are strings of bounded length; nested values become dotted keys.
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(config).items()})

    def log(self, values, step):
        self.mlflow.log_metrics(values, step=step)

    def close(self):
        self.mlflow.end_run()


class WandB(Tracker):
    def __init__(self, run_dir, name, group, config):
        import wandb

        with _quiet():
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or os.environ.get(PROJECT_ENV, "medln"),
                                  name=name, group=group, config=config, dir=str(run_dir))

    def log(self, values, step):
        self.run.log(values, step=step)

    def close(self):
        with _quiet():
            self.run.finish()


@dataclass(frozen=True)
class TrackerSpec:
    name: str
    module: str  # what must import for it to work
    install: str  # the pip command that provides it
    opens: Callable[[Path, str, "str | None", dict], Tracker]


TRACKERS: list[TrackerSpec] = [
    TrackerSpec("tensorboard", "tensorboard", "pip install tensorboard", TensorBoard),
    TrackerSpec("trackio", "trackio", "pip install trackio", Trackio),
    TrackerSpec("mlflow", "mlflow", "pip install mlflow-skinny", MLflow),  # the tracking client alone
    TrackerSpec("wandb", "wandb", "pip install wandb", WandB),
]
REPORT_TO = ("none", *(t.name for t in TRACKERS))  # the --report-to choices


def get_tracker(name: str) -> TrackerSpec | None:
    """The tracker named (None for "none"); TrackerError for an unknown or missing one."""
    if name in ("none", "", None):
        return None
    spec = next((t for t in TRACKERS if t.name == name), None)
    if spec is None:
        raise TrackerError(f"--report-to {name}: unknown (choose from {', '.join(REPORT_TO)})")
    if importlib.util.find_spec(spec.module) is None:
        raise TrackerError(f"--report-to {name} needs {spec.module}, which is not installed: {spec.install} "
                           "(or all trackers: pip install 'medln[trackers]')")
    return spec


check = get_tracker  # called before anything loads: a missing tracker costs nothing


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


STEP_KEYS = {"loss": "train/loss", "lr": "train/learning_rate", "samples_per_s": "train/samples_per_s",
             "step_s": "train/step_s", "peak_mem_gb": "train/peak_mem_gb", "epoch": "train/epoch"}


def _is_count(metric: str) -> bool:
    """n, n_closed, n_open, ...: how many items were scored, not a score."""
    return metric == "n" or metric.startswith("n_")


# The start record's fields a tracker gets beside the config.
REPORTED = ("backbone", "family", "precision", "num_processes", "trainable", "total", "percent", "dead", "n_train")


def mirrored(records: Iterator[dict], report_to: str, run_dir, config: dict, start: dict, *,
             run_name: str | None = None, group: str | None = None) -> Iterator[dict]:
    """A run's records as they come, each also fed to the tracker (train_run: `run_dir` None on
    the processes that do not write the run, which report nothing). Closed when the records end,
    fail or are abandoned, before the caller's error handling (a discard) touches the folder."""
    if run_dir is None or report_to == "none":
        yield from records
        return
    reporter = Reporter(report_to, run_dir, {**config, "run": {k: start[k] for k in REPORTED if k in start}},
                        run_name=run_name, group=group)
    try:
        for record in records:
            reporter.follow(record)
            yield record
    finally:
        reporter.close()


class Reporter:
    """Feeds a run's records to a tracker: `follow(record)` for each, `close()` at the end.
    A tracker's own failure is said once on stderr and the tracker dropped; the run goes on."""

    def __init__(self, name: str, run_dir, config: dict, *, run_name: str | None = None, group: str | None = None):
        spec = get_tracker(name)
        self.name, self.step, self.tracker = name, 0, None
        if spec is not None:
            self.tracker = self._guard(lambda: spec.opens(Path(run_dir), run_name or Path(run_dir).name, group, config))

    def _guard(self, call):
        try:
            return call()
        except Exception as e:  # a tracker's network, disk or version trouble is not the run's
            print(f"warning: --report-to {self.name}: {type(e).__name__}: {str(e).strip()[:200]}; "
                  "not reporting this run any further", file=sys.stderr, flush=True)
            self.tracker = None
            return None

    def follow(self, record: dict) -> None:
        if self.tracker is None:
            return
        event = record.get("event")
        if event == "step":
            self.step = record["step"]
            values = {tag: float(record[key]) for key, tag in STEP_KEYS.items() if record.get(key) is not None}
        elif event == "eval":
            values = {f"eval/{record['which']}/{split}/{metric}": float(v)
                      for split, metrics in (record.get("metrics") or {}).items()
                      for metric, v in (metrics or {}).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and not _is_count(metric)}
        else:
            return
        if values:
            tracker = self.tracker
            self._guard(lambda: tracker.log(values, self.step))

    def close(self) -> None:
        tracker = self.tracker
        if tracker is not None:
            self._guard(tracker.close)
            self.tracker = None
