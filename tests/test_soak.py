"""bench/soak.py (issue 25): ten clients x five /ask during a fine-tune against a real
`medln app` process. Every call is answered or refused "queue is full", the fine-tune
finishes, the app still answers, no traceback in its log, and its RSS after is within 10 %
of before. Minutes on a CPU: marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_soak(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["answered"] + r["queue_full"] == 50 and not r["errors"] and r["answered"] > 0
    assert r["finetune_state"] == "done" and r["alive"] and r["server_tracebacks"] == 0
    assert abs(r["rss_change"]) <= 0.10
