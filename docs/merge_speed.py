"""Decode speed of a tuned LN adapter on the bundled model: through peft's LN-tuning wrapper,
with the trained modules swapped in (what medln.models does for the tuned answer), merged into
a standalone model (merge_and_unload), and the plain base. Rounds are interleaved (the machine
is shared and its load drifts); the ratios come from per-round medians.

    python docs/merge_speed.py RUN [--rounds 7] [--tokens 48] [--out docs/merge_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from medln.backbones import load_backbone
from medln.data.images import load_image
from medln.merge import merge_model, swapped_in
from medln.prompts import encode_for_generation, to_device
from medln.runs import RunDir, attach_run as load_run_model, base_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", default="docs/merge_speed.json")
    args = ap.parse_args()

    source = base_spec(args.run).backbone
    bb = load_backbone(source)
    tuned = load_run_model(bb, args.run).eval()
    plain = load_backbone(source).model.eval()
    merged = merge_model(load_run_model(load_backbone(source), args.run)).eval()
    image = load_image(Path("assets/sample/images/test-0000.png"), where="sample")
    batch = to_device(encode_for_generation(bb, [image] * args.batch, ["What is the orientation of this image?"] * args.batch), "cpu")
    pad = bb.processor.tokenizer.pad_token_id

    def decode(model) -> tuple[float, torch.Tensor]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                                 pad_token_id=pad)
        return time.perf_counter() - t0, out

    def swapped(model):
        with swapped_in(model):
            return decode(model)

    variants = {"peft wrapper": lambda: decode(tuned), "swapped in": lambda: swapped(tuned),
                "merged": lambda: decode(merged), "plain base": lambda: decode(plain)}
    for fn in variants.values():  # warm-up
        fn()
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {k: [] for k in variants}
    outs: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            dt, outs[name] = fn()
            times[name].append(dt)
    tokens = args.tokens * args.batch
    result = {
        "run": args.run, "scope": RunDir(Path(args.run)).config()["config"]["scope"], "rounds": args.rounds,
        "new_tokens": args.tokens, "batch": args.batch, "threads": torch.get_num_threads(),
        "tokens_per_s_median": {k: round(tokens / statistics.median(v), 2) for k, v in times.items()},
        "speedup_vs_wrapper_median_of_rounds": {
            k: round(statistics.median(w / t for w, t in zip(times["peft wrapper"], v)), 4) for k, v in times.items()},
        "speedup_vs_wrapper_range_of_rounds": {
            k: [round(min(w / t for w, t in zip(times["peft wrapper"], v)), 4),
                round(max(w / t for w, t in zip(times["peft wrapper"], v)), 4)] for k, v in times.items()},
        "same_tokens_as_wrapper": {k: bool(torch.equal(outs[k], outs["peft wrapper"])) for k in variants},
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before and after the rounds
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
