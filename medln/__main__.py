"""medln <command> (or python -m medln): the CLI. Flags come from the config dataclasses
(medln.config): one dataclass per command, --config FILE for any of them.

Errors the user can fix (bad data, unknown backbone, offline hub, invalid config) print
one clear line to stderr and exit 2; never a stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time

from .config import (AskArgs, ConfigError, EvalArgs, Listing, ParamsArgs, ScoreArgs, TrainArgs, TrainConfig, add_command,
                     from_args)
from .config_files import parse_command_line

log = logging.getLogger("medln.cli")  # diagnostics: stderr through medln.logs.console, not print
COMMAND_MODULES: list[str] = ["compare.cli", "bench", "bench.ask", "inspect", "merge", "hub", "launch"]  # modules defining add_cli(sub)
# Builders (medln.make) are imported only when their own command runs: `medln --help` and
# every other command never load them. name -> (module defining add_cli(sub), one-line help)
BUILDER_COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain-tiny": ("make.pretrain", "build and pretrain the bundled medln-tiny backbone (source style)"),
}


def _print(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj), flush=True)
    elif isinstance(obj, list):
        for row in obj:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


def cmd_backbones(args) -> None:
    from .backbones import BACKBONES
    from .methods import default_batch

    # lrs: the rates measured on this backbone, which replace the scopes' own (`medln scopes`)
    rows = [{"name": b.name, "hub_id": b.hub_id, "family": b.family, "license": b.license, "gated": b.gated,
             "batch_size": default_batch(b.name), "lrs": dict(b.lrs)} for b in BACKBONES]
    if not args.json:  # one readable line per backbone
        rows = [{**r, "lrs": ",".join(f"{k}={v:g}" for k, v in r["lrs"].items()) or "-"} for r in rows]
    _print(rows, args.json)


def cmd_scopes(args) -> None:
    from .methods import SCOPES

    rows = [{"name": s.name, "kind": s.kind, "targets": list(s.targets), "description": s.description,
             "default_lr": s.default_lr, "quant_4bit": s.quant_4bit} for s in SCOPES]
    _print(rows, args.json)


def cmd_params(args) -> None:
    from .accounting import param_rows
    from .methods import get_scope

    if args.scope != "all":
        get_scope(args.scope)  # an unknown name is a usage error (exit 2), not a "skipped" row
    TrainConfig(backbone=args.backbone, quant=args.quant, lora_r=args.lora_r).validate()  # the bounds train has
    t0 = time.perf_counter()
    rows = param_rows(args.backbone, None if args.scope == "all" else [args.scope], args.quant, args.lora_r)
    if not args.json:
        for r in rows:
            if "skipped" in r:
                print(f"{r['scope']:<10} skipped: {r['skipped']}")
            else:
                print(f"{r['scope']:<10} {r['trainable']:>14,} / {r['total']:,} ({r['percent']:.4f} %)  "
                      f"dead={r['dead']:,}  modules={len(r['modules'])}")
        log.info("(%.2f s)", time.perf_counter() - t0)
        return
    _print(rows[0] if args.scope != "all" else rows, True)


def cmd_train(args) -> None:
    from .progress import Bars
    from .runs import new_run_id

    cfg = from_args(args, TrainArgs).train_config()
    out = args.out or f"runs/{new_run_id(cfg.backbone, cfg.scope)}"
    from .train import train_run

    bars = Bars.for_args(args)
    score_bar = bars.score_records()  # scoring reported as records rather than through the callback
    steps = None  # the training bar: from the start record on, drawn by the main process only
    main = None
    for record in bars.through(train_run(cfg, out, overwrite=args.overwrite, report_to=args.report_to)):
        if main is None:  # train_run's Accelerator has set up the (possibly distributed) state by now
            from accelerate import PartialState

            main = PartialState().is_main_process
        if not main:  # under `accelerate launch` only the main process prints
            continue
        if record.get("event") == "start":
            steps = bars.bar(cfg.steps, "training", "step")
        elif record.get("event") == "step" and steps is not None:
            steps.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            steps.update()
            if record["step"] == cfg.steps:
                steps.close()  # training is over: the scoring bars come next
        elif record.get("event") == "eval" and record.get("which") in ("blind", "ceiling"):  # before the first step
            about = record.get("about")  # on the blind row's record only
            if about is not None:
                log.info("image-blind row and probe ceiling: %s", "from the cache" if about.get("cached")
                         else f"computed in {about.get('seconds', 0):.1f} s (cached for the next run)")
        elif steps is not None:
            steps.close()  # stopped early, or done: the bar ends where training did (closing twice is harmless)
        if record.get("event") == "score":
            score_bar(record)
        if args.json:
            print(json.dumps(record), flush=True)
        elif record.get("event") == "start":
            print(f"{record['backbone']} ({record['family']}) scope={record['scope']} quant={record['quant']} "
                  f"precision={record['precision']} "
                  f"lr={record['lr']:g} steps={record['steps']} batch={record['batch_size']}: trains {record['trainable']:,} of {record['total']:,} parameters "
                  f"({record['percent']:.4f} %), dead norms {record['dead']:,}; {record['n_train']} samples", flush=True)
            for note in record["notes"]:
                log.info("note: %s", note)  # a diagnostic: stderr, hidden by --quiet
            log.info("%s", scored_line(record))  # what is scored and how to change it: stderr, as the notes
        elif record.get("event") == "stopped":
            print(f"stopped after step {record['step']}: the adapter trained so far is saved and scored", flush=True)
        elif record.get("event") == "done":
            cached = f"; base answers of {', '.join(record['base_cached'])} from the cache" if record.get("base_cached") else ""
            print(f"run: {record['run']} ({record['status']}, {record['steps_done']} steps, training "
                  f"{record['train_s']:.1f} s, evaluation {record.get('eval_s', 0):.1f} s{cached})")
            print(scores_text(record))


def scored_line(start: dict) -> str:
    """What base and tuned are scored on, and how to change it (train's start record)."""
    items = start.get("eval_items") or {}
    if not items:
        return "scoring: none (no evaluation split)"
    parts = ", ".join(f"{v['scored']} of {v['of']} {split}" for split, v in items.items())
    from .config import EVAL_LIMIT

    limit = start.get("eval_limit")
    how = (f"--eval-limit {limit} per split{', the default, as in the app' if limit == EVAL_LIMIT else ''}; "
           "--eval-limit 0 scores all" if limit else "--eval-limit 0: every item")
    return f"scoring base and tuned on {parts} items ({how})"


def scores_text(result: dict) -> str:
    """train's summary: base, tuned, the image-blind row and the probe ceiling on the same
    items, with n, and split by question phrasing where the records say it (medln.references)."""
    from .metrics import METRICS
    from .references import COLUMN_LABELS, COLUMNS, NO_PHRASING, has_phrasing, score_table

    rows = score_table(result, brief=True)
    if not rows:
        return "  (no evaluation split was scored)"
    head = f"  {'split':<12} {'phrasing':<9} {'metric':<16} {'n':>5} " + " ".join(f"{COLUMN_LABELS[c]:>13}" for c in COLUMNS)
    lines = [head]
    for r in rows:
        m = METRICS[r["metric"]]
        lines.append(f"  {r['split']:<12} {r['phrasing']:<9} {r['metric']:<16} {'–' if r['n'] is None else r['n']:>5} "
                     + " ".join(f"{m.format(r[c]):>13}" for c in COLUMNS))
    about = result.get("references") or {}
    lines.append(f"  image-blind: {about.get('blind', 'not computed')}; fitted on the training data's {about.get('fitted_on', '?')}")
    lines.append(f"  probe ceiling: {about.get('ceiling', 'not computed')}")
    if not has_phrasing(result):
        lines.append(f"  by phrasing: {NO_PHRASING}")
    return "\n".join(lines)


def _base_or_run(args):
    """(BaseSpec to answer with, RunInfo or None): a run decides its own base (medln.runs);
    a --backbone that contradicts it is a usage error, not a silently different model."""
    from .runs import BaseSpec
    from .answers import require_run
    from .models import canonical

    if not args.adapter:
        return BaseSpec(args.backbone or "medln-tiny", args.quant, precision=args.precision), None
    run = require_run(args.adapter)
    if args.precision != "auto":  # asked for: rebuild the run's base in that precision
        import dataclasses

        run = dataclasses.replace(run, base=dataclasses.replace(run.base, dtype=None, precision=args.precision))
    if args.backbone and canonical(args.backbone) != canonical(run.base.backbone):
        from .config import ConfigError

        raise ConfigError(f"--backbone {args.backbone} differs from the base {run.base.backbone} that {args.adapter} "
                          "was trained on; omit --backbone")
    return run.base, run


def cmd_ask(args) -> None:
    from .backbones import REPORT_PROMPT
    from .data.images import load_image
    from .generation import MAX_NEW_TOKENS
    from .prompts import check_question
    from .answers import stream_answers
    from .models import ModelCache

    check_question(args.question)  # before loading anything
    base, run = _base_or_run(args)
    if run is not None:  # peft attaches the adapter; bitsandbytes only where weights are 4-bit
        from .adapters import import_peft

        import_peft(quantized=base.quant == "4bit")
    image = load_image(args.image, where=args.image)
    task = "vqa" if args.question else "report"
    base_answer = tuned_answer = ""
    # The app's model cache and answer path: the CLI answers exactly as the app does.
    for base_answer, tuned_answer in stream_answers(ModelCache(max_models=1), default_backbone=base, run=run,
                                                    image=image, question=args.question or REPORT_PROMPT,
                                                    max_new_tokens=MAX_NEW_TOKENS[task], with_base=False):
        pass
    answer = tuned_answer if run else base_answer
    from . import DISCLAIMER
    from pathlib import Path

    from .domain import check_image, is_demo_backbone, warning

    # The image check is measured on the demo model's data only (medln.domain): other models get none.
    demo = is_demo_backbone(base.backbone)
    out = {"answer": answer, "backbone": base.backbone, "adapter": args.adapter or None, "disclaimer": DISCLAIMER,
           "warning": (warning(check_image(image), Path(base.backbone).name) or None) if demo else None}
    if args.json:
        print(json.dumps(out))
    else:  # the same warnings as --json, after the answer (a script that wants the answer alone reads --json)
        print(answer)
        print(f"⚠ {DISCLAIMER}" + (f" {out['warning']}" if out.get("warning") else ""))


def cmd_eval(args) -> None:
    from pathlib import Path

    from .data import load_samples
    from .evaluate import evaluate, subsample
    from .progress import Bars
    from .rank import is_main_process
    from .runs import load_run

    if not is_main_process():
        # Under `accelerate launch` every process would score the whole split and write the
        # same predictions file: evaluation is not sharded, so the main process does it alone.
        return
    base, run = _base_or_run(args)
    loaded = load_samples(args.data, args.split, skip_bad=args.skip_bad)  # bad data before the model loads
    bb = load_run(run.path) if run else base.load()
    samples = subsample(loaded.samples, args.eval_limit)
    # Predictions go into the run folder, or where --predictions says: never into the current folder unasked.
    predictions = Path(args.predictions) if args.predictions else (run.path / f"predictions-{args.split}.jsonl" if run else None)
    key = None
    if run is None:  # the base model: its answers may be cached already (medln.prediction_cache)
        from .backbones import resolve
        from .prediction_cache import base_key

        key = base_key(bb, base, backbone_revision=resolve(base.backbone).revision_record(), split=args.split,
                       limit=args.eval_limit, samples=samples, batch_size=args.eval_batch_size)
    log.info("scoring %d of %d %s items (--eval-limit %d%s)", len(samples), len(loaded.samples), args.split,
             args.eval_limit, "; --eval-limit 0 scores all" if args.eval_limit else ": every item")
    bars = Bars.for_args(args)
    result = evaluate(bb, bb.model, samples, batch_size=args.eval_batch_size, predictions_path=predictions,
                      with_meteor=args.meteor, base_key=key,
                      progress=bars.scoring(f"{'tuned' if run else 'base'} {args.split}"))
    if predictions is not None:
        result["predictions"] = str(predictions)
    if loaded.skipped:
        result["skipped"] = loaded.skipped
    if args.json:
        _print(result, True)
    else:
        _print_scores(result)


def _print_scores(result: dict) -> None:
    """A split's scores as eval prints them: one metric a line with the count it rests on."""
    from .metrics import METRICS

    shown = [m for m in METRICS.values() if result.get(m.name) is not None]
    width = max((len(m.label) for m in shown), default=0)
    for m in shown:
        n = result.get(m.n_key, result.get("n"))  # score --task report: one task, its count is n
        print(f"{m.label:<{width}}  {m.format(result[m.name])}  (n = {n})")
    types = result.get("by_question_type") or {}
    if types:
        print("accuracy by question type: " + ", ".join(f"{t} {METRICS['overall'].format(r['accuracy'])} (n = {r['n']})"
                                                       for t, r in types.items()))
    if result.get("n_report") and result.get("meteor") is None and result.get("meteor_note"):
        print(f"METEOR: {result['meteor_note']}")
    for record_id, reason in result.get("skipped", []):
        print(f"skipped {record_id}: {reason}")
    if result.get("predictions"):
        print(f"predictions: {result['predictions']}")


def cmd_score(args) -> None:
    from .scoring import score_files

    result = score_files(args.task, args.predictions, args.references)
    if args.json:
        _print(result, True)
    else:
        _print_scores(result)  # as eval prints them: one metric a line with its n


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (default: this process's arguments): a builder command's real
    options only when `argv` runs it, a one-line entry in the command list otherwise."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="medln", description="LayerNorm fine-tuning of medical VLMs. "
                                "Every command takes --config FILE (JSON/YAML) and shows its defaults in --help.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"medln {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    add_command(sub, "backbones", Listing, cmd_backbones, help="list the backbone registry")
    add_command(sub, "scopes", Listing, cmd_scopes, help="list the tuning scopes")
    add_command(sub, "params", ParamsArgs, cmd_params, help="trainable parameters per scope, from config.json alone")
    add_command(sub, "train", TrainArgs, cmd_train, help="fine-tune a scope; writes a run folder")
    add_command(sub, "ask", AskArgs, cmd_ask, help="answer a question about an image (or write a report)")
    add_command(sub, "eval", EvalArgs, cmd_eval, help="predict and score a data split")
    add_command(sub, "score", ScoreArgs, cmd_score, help="score a predictions JSONL against references (joined on id)")
    command = next((a for a in argv if not a.startswith("-")), None)
    # Commands that live with their concept: each module has add_cli(subparsers). A command
    # defined above needs none of them: `ask` does not pay for importing compare and bench.
    if command not in sub.choices:
        for module in COMMAND_MODULES:
            importlib.import_module(f"medln.{module}").add_cli(sub)
    for name, (module, text) in BUILDER_COMMANDS.items():
        if name == command:
            importlib.import_module(f"medln.{module}").add_cli(sub)
        else:
            sub.add_parser(name, help=text, description=text)
    return p


def main(argv: list[str] | None = None) -> int:
    from .backbones import BackboneError
    from .data.sample import DataError
    from .machine import free_memory
    from .memory import is_out_of_memory
    from .runs import RunError
    from .hub import HubError
    from .methods import ScopeError
    from .tensorfile import TensorFileError
    from .trackers import TrackerError
    from .userfiles import FileError

    from .logs import console
    from .progress import bars_wanted, library_bars_off

    try:
        args = parse_command_line(build_parser(argv), argv)
        if getattr(args, "_console_log", False):
            console(quiet=args.quiet)
            if not bars_wanted(quiet=args.quiet, as_json=bool(getattr(args, "json", False))):
                library_bars_off()
        args.func(args)
    except (BackboneError, ConfigError, DataError, HubError, RunError, ScopeError, FileError, TensorFileError,
            TrackerError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`medln backbones --json | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141
    except OSError as e:  # the file system refused (permissions, a folder where a file goes, a full disk)
        if is_out_of_memory(e) or e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        free_memory()
        print(f"error: out of memory ({type(e).__name__}): try a smaller --batch-size, --grad-checkpointing, "
              "--quant 4bit, a shorter --max-length or a smaller backbone", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
