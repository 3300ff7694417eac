"""python -m medln <command>: the CLI. Flags come from the config dataclasses.

Errors the user can fix (bad data, unknown backbone, offline hub, invalid config) print
one clear line to stderr and exit 2; never a stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from .config import TrainConfig, add_arguments, from_args

COMMAND_MODULES: list[str] = ["make.pretrain", "compare", "bench", "inspect", "merge"]  # modules defining add_cli(sub)


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

    rows = [{"name": b.name, "hub_id": b.hub_id, "family": b.family, "license": b.license, "gated": b.gated}
            for b in BACKBONES]
    _print(rows, args.json)


def cmd_scopes(args) -> None:
    from .scopes import SCOPES

    rows = [{"name": s.name, "description": s.description, "default_lr": s.default_lr, "quant_4bit": s.quant_4bit}
            for s in SCOPES]
    _print(rows, args.json)


def cmd_params(args) -> None:
    from .accounting import param_rows
    from .scopes import get_scope

    if args.scope != "all":
        get_scope(args.scope)  # an unknown name is a usage error (exit 2), not a "skipped" row
    t0 = time.perf_counter()
    rows = param_rows(args.backbone, None if args.scope == "all" else [args.scope], args.quant, args.lora_r)
    if not args.json:
        for r in rows:
            if "skipped" in r:
                print(f"{r['scope']:<10} skipped: {r['skipped']}")
            else:
                print(f"{r['scope']:<10} {r['trainable']:>14,} / {r['total']:,} ({r['percent']:.4f} %)  "
                      f"dead={r['dead']:,}  modules={len(r['modules'])}")
        print(f"({time.perf_counter() - t0:.2f} s)", file=sys.stderr)
        return
    _print(rows[0] if args.scope != "all" else rows, True)


def cmd_train(args) -> None:
    from .runs import new_run_id

    cfg = from_args(args)
    out = args.out or f"runs/{new_run_id(cfg.backbone, cfg.scope)}"
    from .train import train_run

    main = None
    for record in train_run(cfg, out):
        if main is None:  # train_run's Accelerator has set up the (possibly distributed) state by now
            from accelerate import PartialState

            main = PartialState().is_main_process
        if not main:  # under `accelerate launch` only the main process prints
            continue
        if args.json:
            print(json.dumps(record), flush=True)
        elif record.get("event") == "start":
            print(f"{record['backbone']} ({record['family']}) scope={record['scope']} quant={record['quant']} "
                  f"lr={record['lr']:g}: trains {record['trainable']:,} of {record['total']:,} parameters "
                  f"({record['percent']:.4f} %), dead norms {record['dead']:,}; {record['n_train']} samples", flush=True)
            for note in record["notes"]:
                print(f"  note: {note}")
        elif record.get("event") == "done":
            print(f"run: {record['run']} ({record['status']}, {record['steps_done']} steps, {record['train_s']:.1f} s)")
            for split in record["tuned"]:
                b, t = record["base"][split], record["tuned"][split]
                keys = [k for k in ("overall", "closed_accuracy", "open_recall", "bleu_4", "rouge_l") if t.get(k) is not None]
                print(f"  {split:<12} " + "  ".join(f"{k} {b.get(k) or 0:.3f}->{t[k]:.3f}" for k in keys))
        elif "step" in record and (record["step"] % 10 == 0 or record["step"] == 1):
            print(f"step {record['step']:>5}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                  f"{record['samples_per_s']:.1f} samples/s", flush=True)


def _load_with_adapter(backbone: str, adapter: str | None, quant: str):
    from .backbones import load_backbone
    from .runs import RunDir, load_run_model

    if adapter:
        run_cfg = RunDir(__import__("pathlib").Path(adapter)).config()
        quant = run_cfg.get("config", {}).get("quant", quant)
    bb = load_backbone(backbone, quant=quant)
    model = load_run_model(bb, adapter) if adapter else bb.model
    return bb, model


def cmd_ask(args) -> None:
    from .data.images import load_image
    from .prompts import generate
    from .backbones import REPORT_PROMPT
    from .evaluate import MAX_NEW_TOKENS

    bb, model = _load_with_adapter(args.backbone, args.adapter, args.quant)
    image = load_image(args.image, where=args.image)
    question = args.question or REPORT_PROMPT
    task = "vqa" if args.question else "report"
    answer = generate(bb, model, [image], [question], max_new_tokens=MAX_NEW_TOKENS[task])[0]
    out = {"answer": answer, "backbone": bb.name, "adapter": args.adapter,
           "disclaimer": "research demo, not for clinical use"}
    if args.json:
        print(json.dumps(out))
    else:
        print(answer)


def cmd_eval(args) -> None:
    from pathlib import Path

    from .data import load_samples
    from .evaluate import evaluate, subsample

    bb, model = _load_with_adapter(args.backbone, args.adapter, args.quant)
    loaded = load_samples(args.data, args.split, skip_bad=args.skip_bad)
    samples = subsample(loaded.samples, args.limit)
    predictions = args.predictions or (Path(args.adapter) / f"predictions-{args.split}.jsonl" if args.adapter
                                       else Path(f"predictions-{Path(bb.name).name}-{args.split}.jsonl"))
    result = evaluate(bb, model, samples, batch_size=args.batch_size, predictions_path=predictions,
                      with_meteor=not args.no_meteor)
    result["predictions"] = str(predictions)
    if loaded.skipped:
        result["skipped"] = loaded.skipped
    _print(result, args.json)


def cmd_score(args) -> None:
    from .metrics import score_files

    _print(score_files(args.task, args.pred, args.ref), args.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m medln", description="LayerNorm fine-tuning of medical VLMs")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("backbones", help="list the backbone registry")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_backbones)

    s = sub.add_parser("scopes", help="list the tuning scopes")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_scopes)

    s = sub.add_parser("params", help="trainable parameters per scope, from config.json alone")
    add_arguments(s, only=("backbone", "quant", "lora_r"))
    s.add_argument("--scope", default="ln", help="a scope name, or 'all'")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_params)

    s = sub.add_parser("train", help="fine-tune a scope; writes a run folder")
    add_arguments(s)
    s.add_argument("--out", help="run folder to create (default runs/<id>)")
    s.add_argument("--json", action="store_true", help="one JSON object per log record on stdout")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("ask", help="answer a question about an image (or write a report)")
    add_arguments(s, only=("backbone", "quant"))
    s.add_argument("--adapter", help="a run folder: answer with its tuned weights")
    s.add_argument("--image", required=True)
    s.add_argument("--question", help="omit to generate a report")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_ask)

    s = sub.add_parser("eval", help="predict and score a data split")
    add_arguments(s, only=("backbone", "quant", "data", "skip_bad"))
    s.add_argument("--adapter", help="a run folder")
    s.add_argument("--split", default="test")
    s.add_argument("--limit", type=int, default=0, help="at most N samples, evenly spaced (0: all)")
    s.add_argument("--no-meteor", action="store_true", help="skip METEOR (it starts a Java process)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--predictions", help="predictions JSONL to write (default: RUN/predictions-SPLIT.jsonl with "
                   "--adapter, else ./predictions-BACKBONE-SPLIT.jsonl)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("score", help="score a predictions JSONL against references (joined on id)")
    s.add_argument("--task", choices=("vqa", "report"), required=True)
    s.add_argument("--pred", required=True)
    s.add_argument("--ref", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_score)

    # Commands that live with their concept: each module has add_cli(subparsers).
    for module in COMMAND_MODULES:
        importlib.import_module(f"medln.{module}").add_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .backbones import BackboneError
    from .config import ConfigError
    from .data.sample import DataError
    from .scopes import ScopeError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (BackboneError, ConfigError, DataError, ScopeError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
