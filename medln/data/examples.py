"""The reference answers of a bundled example image: every question (and report) that the
bundled sample's records ask about it, with the answer the record holds, so that the Ask
tab can show what the right answer is beside the base and tuned ones.

Read from whatever JSONL files the bundled folder holds (its split files are not listed
here: a rebuilt sample with other split names is read the same way).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from .bundled import ASSETS


@lru_cache(maxsize=4)
def _index(root: str) -> dict[str, list[dict]]:
    """{resolved image path: [{"question", "answer", "file"}]} over root's *.jsonl files."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(root).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or not rec.get("image"):
                continue
            answer = rec.get("answer", rec.get("report"))
            if answer is None:
                continue
            key = str((Path(root) / rec["image"]).resolve())
            out.setdefault(key, []).append({"question": rec.get("question"), "answer": str(answer),
                                            "file": path.stem})
    return out


def reference_answers(image: str | Path, root: Path = ASSETS) -> list[dict]:
    """[{"question" (None: the report), "answer", "file"}] for a bundled image; [] for any other."""
    try:
        key = str(Path(image).resolve())
    except OSError:
        return []
    return list(_index(str(root)).get(key, []))


def reference_md(image: str | Path, root: Path = ASSETS, limit: int = 8) -> str:
    """The reference answers as a short Markdown list ("" when the image is not bundled)."""
    refs = reference_answers(image, root)
    if not refs:
        return ""
    lines = [f"**Reference answers** (the bundled records of this image, `{refs[0]['file']}`"
             + (f" and {len({r['file'] for r in refs}) - 1} more files" if len({r['file'] for r in refs}) > 1 else "")
             + "):"]
    for r in refs[:limit]:
        if r["question"]:
            lines.append(f"- {r['question']} → **{r['answer']}**")
        else:
            lines.append(f"- report: {r['answer'][:300]}{'…' if len(r['answer']) > 300 else ''}")
    if len(refs) > limit:
        lines.append(f"- … and {len(refs) - limit} more")
    return "\n".join(lines)


__all__ = ["reference_answers", "reference_md"]
