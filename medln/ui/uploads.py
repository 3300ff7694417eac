"""User uploads: datasets (a zip, or a JSONL file) and images, checked before use.

A zip is untrusted input. Every member path is checked before anything is written
(absolute paths, drive letters, backslashes, `..` components and symlinks are refused, and
each resolved target must stay inside the extraction folder: "zip slip"), the declared
total size is capped, and extraction counts the bytes actually written, so an archive that
lies about its sizes (a zip bomb) is stopped at the cap too.
"""

from __future__ import annotations

import shutil
import stat
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from medln.data import Found, detect, jsonl, load_samples
from medln.data.sample import DataError

from .errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".bmp", ".webp")
DATASET_SUFFIXES = (".zip", ".jsonl")
MAX_MEMBERS = 50_000
_CHUNK = 1 << 20


@dataclass
class DataChoice:
    """A data spec for TrainConfig.data, with the splits to evaluate on and notes for the user."""

    spec: str
    eval_split: str = "test"
    ood_split: str = ""
    notes: list[str] = field(default_factory=list)
    label: str = ""


def check_size(path: Path, limit: int, what: str = "upload") -> int:
    size = Path(path).stat().st_size
    if size > limit:
        raise UserError(f"{what} is too large: {size / 2**20:.1f} MB (the limit is {limit / 2**20:.0f} MB)")
    if size == 0:
        raise UserError(f"{what} is empty")
    return size


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\\" in name:
        return "backslash in a path"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in a path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    if info.flag_bits & 0x1:
        return "encrypted member"
    return None


def safe_extract(zip_path: Path, dest: Path, *, max_bytes: int, max_members: int = MAX_MEMBERS) -> Path:
    """Extract `zip_path` into `dest` (created; removed again on any failure)."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError):
        raise UserError("the upload is not a readable zip archive") from None
    dest = Path(dest)
    with zf:
        members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
        if len(members) > max_members:
            raise UserError(f"the zip holds {len(members):,} entries (the limit is {max_members:,})")
        declared = sum(m.file_size for m in members)
        if declared > max_bytes:
            raise UserError(f"the zip expands to {declared / 2**20:.0f} MB (the limit is {max_bytes / 2**20:.0f} MB)")
        root = dest.resolve()
        targets = []
        for m in members:
            problem = _member_problem(m)
            target = (root / m.filename).resolve()
            if problem is None and target != root and root not in target.parents:
                problem = "path outside the archive folder"
            if problem:
                raise UserError(f"refused the zip: unsafe entry {m.filename!r} ({problem})")
            targets.append((m, target))
        dest.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            for m, target in targets:
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, target.open("wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:  # the header lied about sizes
                            raise UserError(f"the zip expands past {max_bytes / 2**20:.0f} MB; refused")
                        out.write(chunk)
        except UserError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, ValueError) as e:  # CRC, truncation
            shutil.rmtree(dest, ignore_errors=True)
            raise UserError(f"the zip archive is damaged ({type(e).__name__}: {e})") from None
    return dest


# ------------------------------------------------------------------ format detection

def detect_format(root: Path) -> DataChoice:
    """Which supported layout an extracted upload holds: asked of the loaders (medln.data.detect)."""
    try:
        kind, found = detect(root, "the zip")
    except DataError as e:
        raise UserError(str(e)) from None
    return _choice(kind, found)


def _choice(kind: str, found: Found) -> DataChoice:
    return DataChoice(f"{kind}:{found.path}", found.eval_split, found.ood_split, list(found.notes), found.label)


def prepare_dataset(source: str, upload: str | Path | None, hub_id: str, uploads_dir: Path, *,
                    max_upload_bytes: int, max_unzip_bytes: int, validate: bool = True) -> DataChoice:
    """Widget values -> DataChoice. `source`: "sample" | "upload" | "hub"."""
    if source == "sample":
        return DataChoice("sample", "test", "source-test", label="bundled sample")
    if source == "hub":
        hub_id = (hub_id or "").strip().removeprefix("hf:")
        if not hub_id:
            raise UserError("enter a Hugging Face dataset id, e.g. flaviagiammarino/vqa-rad")
        return DataChoice(f"hf:{hub_id}", "test", label=f"hub dataset {hub_id}")
    if source != "upload":
        raise UserError(f"unknown dataset source {source!r}")
    if not upload:
        raise UserError("choose a dataset file to upload (a .zip, or a .jsonl)")
    upload = Path(upload)
    suffix = upload.suffix.lower()
    if suffix not in DATASET_SUFFIXES:
        raise UserError(f"unsupported dataset file {upload.name!r}: upload a .zip or a .jsonl")
    check_size(upload, max_upload_bytes, "the dataset upload")
    folder = Path(uploads_dir) / uuid.uuid4().hex[:10]
    if suffix == ".zip":
        safe_extract(upload, folder, max_bytes=max_unzip_bytes)
        try:
            choice = detect_format(folder)
        except UserError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        choice.label = f"{upload.name}: {choice.label}"
    else:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "data.jsonl"
        shutil.copyfile(upload, target)
        try:
            choice = _choice("jsonl", jsonl.found(target))
        except DataError as e:
            raise UserError(str(e)) from None
        choice.label = upload.name
    if validate:
        check_loads(choice, folder, upload.name, lone_jsonl=suffix == ".jsonl")
    return choice


def check_loads(choice: DataChoice, folder: Path, shown: str, *, lone_jsonl: bool = False) -> None:
    """Load the training split now, so a malformed dataset fails at Start with its reason
    (file:line and field) instead of inside the job; server paths are not shown."""
    try:
        loaded = load_samples(choice.spec, "train", skip_bad=False)
    except DataError as e:
        msg = str(e).replace(str(folder.resolve()) + "/", "").replace(str(folder) + "/", "")
        if lone_jsonl and "file not found" in msg:
            msg += (" — a JSONL file alone cannot carry its images: upload a zip holding the JSONL "
                    "and the image files it names (paths relative to the JSONL)")
        raise UserError(f"{shown}: {msg}") from None
    choice.notes.append(f"{len(loaded.samples)} training records")


def check_image_upload(path: str | Path | None, max_bytes: int) -> Path:
    if not path:
        raise UserError("choose an image first (upload one, or click a bundled example)")
    path = Path(path)
    if path.suffix and path.suffix.lower() not in IMAGE_SUFFIXES:  # DICOM often has no suffix
        raise UserError(f"unsupported image file {path.name!r}: upload PNG, JPEG, TIFF or DICOM (.dcm)")
    check_size(path, max_bytes, "the image")
    return path
