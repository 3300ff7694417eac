"""Progress bars on the console, one rule for every command: training steps, answers scored
out of n (with their rate) and a comparison's cells, drawn by tqdm on stderr, so stdout keeps
the results and the --json records.

When they show (`bars_wanted`): never with --quiet, nor on a process of an `accelerate launch`
group other than the main one (medln.rank); with --json only when stderr is a
terminal (a program reading the records gets no bar in its log); otherwise always. When they
do not, the bars the libraries draw (transformers' "Loading weights", Hub downloads) are off
too, in every command (`library_bars_off`).

Scoring reports progress through a callback, `progress(done, total)`, that
medln.evaluate.predict calls after each generated batch: `Bars.scoring(label)` is that callback
drawn as a bar; `Bars.score_records()` draws the same bars from "score" records, for a trainer
that reports its scoring as records. Text a command prints while a bar is on goes above it
(`Bars.above`), so a bar and the lines beside it never overwrite each other on a terminal.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Callable, Iterable, Iterator

from .rank import is_main_process

Progress = Callable[[int, int], None]  # progress(done, total), after each batch


def bars_wanted(*, quiet: bool = False, as_json: bool = False, stream=None) -> bool:
    if quiet or not is_main_process():  # under `accelerate launch` the main process alone draws bars
        return False
    stream = sys.stderr if stream is None else stream
    return not as_json or _interactive(stream)


def _interactive(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Bars:
    """The bars of one command run. Disabled, every bar is tqdm's no-op and `scoring` gives
    no callback (the scorer then skips the call)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    @classmethod
    def for_args(cls, args) -> "Bars":
        """From a command's parsed flags: --quiet and --json (absent ones count as off)."""
        return cls(bars_wanted(quiet=bool(getattr(args, "quiet", False)), as_json=bool(getattr(args, "json", False))))

    def bar(self, total: int | None, desc: str, unit: str):
        from tqdm import tqdm

        # On a terminal, tqdm's own pace; in a log file (no terminal), a line every 10 s at most.
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not self.enabled,
                    dynamic_ncols=True, mininterval=0.1 if _interactive(sys.stderr) else 10.0)

    def scoring(self, label: str) -> Progress | None:
        """The scoring callback: a bar "scoring LABEL" of answers out of n, opened at the
        first batch (when n is known) and closed at the last."""
        if not self.enabled:
            return None
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = self.bar(total, f"scoring {label}", "answer")
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return progress

    def score_records(self) -> Callable[[dict], None]:
        """The same bars driven by records instead of a callback: a `{"event": "score", "which",
        "split", "done", "total"}` record (one per generated batch, from a trainer that reports
        its scoring as records) moves the bar "scoring WHICH SPLIT"; answers read from the
        cache (`cached`) draw none (the run's last line says which came from it)."""
        bars: dict[str, Progress | None] = {}

        def on(record: dict) -> None:
            if record.get("cached"):  # answers read from the cache at once: a bar would show a meaningless rate
                return
            label = f"{record['which']} {record['split']}"
            if label not in bars:
                bars[label] = self.scoring(label)
            if bars[label] is not None:
                bars[label](record["done"], record["total"])

        return on

    def through(self, records: Iterable) -> Iterator:
        """`records`, one by one, with what the loop over them prints going above the bars
        (the redirection holds while the loop body runs, between two records)."""
        with self.above():
            yield from records

    @contextlib.contextmanager
    def above(self) -> Iterator[None]:
        """Inside: what the command prints goes above the bars (line by line), not through them.
        Only a terminal needs it: in a log file each bar update is a line of its own anyway."""
        if not (self.enabled and _interactive(sys.stderr)):
            yield
            return
        previous, out = sys.stdout, _AboveBars(sys.stdout, sys.stderr)
        sys.stdout = out
        try:
            yield
        finally:
            out.flush()
            if sys.stdout is out:  # not if someone replaced it since (a late close of `through`)
                sys.stdout = previous


class _AboveBars(io.TextIOBase):
    """A stdout whose complete lines are written while tqdm has the bars on `bars_stream`
    cleared (tqdm.external_write_mode), then the bars are drawn again below them."""

    def __init__(self, out, bars_stream):
        super().__init__()
        self.out, self.bars_stream, self.pending = out, bars_stream, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        if "\n" in self.pending:
            lines, _, self.pending = self.pending.rpartition("\n")
            self._emit(lines + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = ""
        self.out.flush()

    def _emit(self, text: str) -> None:
        from tqdm import tqdm

        with tqdm.external_write_mode(file=self.bars_stream):
            self.out.write(text)
            self.out.flush()


def library_bars_off() -> None:
    """Hub downloads' and transformers' own bars off, for this process: the CLI calls it for
    every command run without bars (medln.__main__), whichever library would draw one."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:  # imported already: it read the Hub's setting at import
        transformers_logging.disable_progress_bar()
