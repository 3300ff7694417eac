"""The one record every loader yields, whatever the source format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Task = Literal["vqa", "report"]
AnswerType = Literal["CLOSED", "OPEN"]
# A record's `phrasing`: whether its question's wording occurs in its train split. Only data
# that says so has it (the bundled sample); nothing infers it, so other data gets no split.
PHRASINGS = ("seen", "held-out")


class DataError(ValueError):
    """Bad data: the message names the file, the record and the field."""


@dataclass(frozen=True)
class Sample:
    """One image with a question and its answer (VQA) or its report (report generation).

    `image` is a filesystem path or the encoded bytes of an image (the HF parquet
    layouts embed bytes); `medln.data.images.load_image` turns either into RGB.
    """

    id: str
    image: Path | bytes
    answer: str  # the answer (vqa) or the full report text (report)
    question: str | None = None  # None for report generation
    task: Task = "vqa"
    answer_type: AnswerType | None = None  # CLOSED / OPEN for vqa; None for reports
    question_type: str | None = None  # e.g. "MODALITY", "PRES, POS" (VQA-RAD / SLAKE style)
    synthetic: bool = False  # procedurally generated (shown as such in the UI)
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_report(self) -> bool:
        return self.task == "report"

    @property
    def phrasing(self) -> str | None:
        """"seen" / "held-out" as the record says, else None (unknown: no split by phrasing)."""
        value = self.meta.get("phrasing")
        return value if value in PHRASINGS else None

    @property
    def where(self) -> str:
        """For messages: the record (file:line when the loader knows it, else its id) and its
        image as the dataset names it, relative to the dataset folder, never resolved."""
        record = f"{self.meta['where']} (record {self.id})" if self.meta.get("where") else f"record {self.id}"
        image = self.meta.get("image") or (self.image.name if isinstance(self.image, Path) else "<embedded image>")
        return f"{record}, image {image}"
