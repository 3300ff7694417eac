"""Per-scope learning-rate sweep on the bundled data: how the scopes' default_lr were chosen.

Every scope gets the same treatment: a grid of learning rates (extended by a factor ~3
while the best point sat on the grid's upper edge), the same 200 steps, batch 8, seed 0,
4-bit weights (full: none, it cannot train 4-bit), and the best tuned `overall` on the
target test split (300 evenly spaced items) wins. Resumable: points already in the output
file are skipped.

    PYTHONPATH=. python docs/lr_sweep.py docs/lr_sweep.jsonl
"""

import json
import sys
import tempfile
from pathlib import Path

from medln.config import TrainConfig
from medln.train import train_run

GRID = {
    "ln": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    "ln-vision": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
    "ln-llm": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    "attn": [3e-5, 1e-4, 3e-4, 1e-3],
    "ffn": [3e-5, 1e-4, 3e-4, 1e-3],
    "lora": [1e-4, 3e-4, 1e-3, 3e-3],
    "full": [1e-5, 5e-5, 2e-4, 1e-3],
}

out = Path(sys.argv[1])
done = {(r["scope"], r["lr"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
for scope, lrs in GRID.items():
    for lr in lrs:
        if (scope, lr) in done:
            continue
        cfg = TrainConfig(backbone="medln-tiny", scope=scope, data="sample", quant="none" if scope == "full" else "4bit",
                          steps=200, lr=lr, eval_split="test", ood_split="", eval_limit=300)
        with tempfile.TemporaryDirectory() as tmp:
            result = [r for r in train_run(cfg, f"{tmp}/run") if r.get("event") == "done"][0]
        row = {"scope": scope, "lr": lr, "steps": 200, "quant": cfg.quant,
               "base_overall": result["base"]["test"]["overall"], "tuned_overall": result["tuned"]["test"]["overall"],
               "train_s": result["train_s"]}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

rows = [json.loads(line) for line in out.read_text().splitlines()]
for scope in GRID:
    best = max((r for r in rows if r["scope"] == scope), key=lambda r: r["tuned_overall"])
    print(f"{scope:<10} best lr {best['lr']:g}: overall {best['base_overall']:.3f} -> {best['tuned_overall']:.3f}")
