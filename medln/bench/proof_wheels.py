"""What the GPU proof installs on a machine without a package index, and the check of the
pins it runs with (medln.bench.gpu_proof).

The device image (/work/.library/device/KINDS.md: Python 3.12, torch 2.11 built for CUDA 13,
transformers 5.17, no bitsandbytes, no gradio) can be reached by no index, and a call carries
at most 64 MiB, working tree included. So `wheels` (run here, with the index) downloads the
pinned versions of what the proof imports that the image lacks or holds at another version,
plus the dependencies the image lacks, for CPython 3.12 on manylinux x86-64, and packs them
into one `.whl/wheels.tar.xz`: each wheel re-zipped uncompressed (its files and RECORD hashes
unchanged) so that xz compresses their contents, and bitsandbytes keeps only the CUDA library
the device's torch loads (and the CPU one). torch stays the image's CUDA build; numpy and
pillow stay the image's (binary wheels of 17 + 7 MB that would not fit beside gradio): the
result file's `pins` lists every such difference.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# Pinned in requirements.txt, imported by the proof, absent from the image or at another version there.
PINNED_CARRY = ("transformers", "tokenizers", "peft", "bitsandbytes", "huggingface-hub", "pydicom", "plotly", "gradio")
# Their dependencies the image lacks (pip's resolution of the pins here, less the image's package list).
DEPS_CARRY = ("gradio-client", "hf-gradio", "fastapi", "starlette", "uvicorn", "pydantic", "pydantic-core",
              "annotated-types", "typing-inspection", "typing-extensions", "orjson", "python-multipart", "brotli",
              "groovy", "pydub", "pytz", "tzdata", "safehttpx", "semantic-version", "tomlkit", "opentelemetry-api",
              "httpx2", "httpcore2", "truststore")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
CALL_LIMIT = 64 * 2**20  # what one device call carries, working tree included


def pins_report(requirements: Path) -> dict:
    """Each `name==version` of requirements.txt against the installed version."""
    from importlib.metadata import PackageNotFoundError, version

    rows = []
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" not in line:
            continue
        name, pinned = (x.strip() for x in line.split("==", 1))
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        rows.append({"name": name, "pinned": pinned, "installed": installed})
    differ = [f"{r['name']} {r['installed'] or 'absent'} (pinned {r['pinned']})" for r in rows
              if (r["installed"] or "").split("+")[0] != r["pinned"]]
    return {"requirements": requirements.name, "rows": rows, "differ": differ}


def _slim(data: bytes, name: str, keep_cuda: str) -> bytes:
    """The wheel re-zipped without compression; bitsandbytes without the GPU libraries of
    other CUDA, ROCm and XPU versions (and their RECORD lines)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()

    def dropped(path: str) -> bool:
        base = path.rsplit("/", 1)[-1]
        return (name.startswith("bitsandbytes-") and base.startswith("libbitsandbytes_")
                and base not in (f"libbitsandbytes_cuda{keep_cuda}.so", "libbitsandbytes_cpu.so"))

    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            if dropped(info.filename):
                continue
            content = src.read(info)
            if info.filename.endswith(".dist-info/RECORD") and name.startswith("bitsandbytes-"):
                # keep every other line as it was (line ends included: pip reads RECORD as csv)
                content = b"".join(line for line in content.splitlines(keepends=True)
                                   if line.strip() and not dropped(line.split(b",")[0].decode()))
            out.writestr(info, content, compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def _travelling_bytes(root: Path, skip: Path) -> int:
    """Tracked and untracked-not-ignored files: what a device call sends besides `carry`."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, capture_output=True,
                           check=True).stdout.decode().split("\0")
    total = 0
    for n in filter(None, names):
        p = root / n
        if p.is_file() and skip not in p.resolve().parents:
            total += p.stat().st_size
    return total


def build_wheels(out: Path, *, python_version: str, cuda: str, root: Path) -> int:
    from importlib.metadata import version

    specs = [f"{n}=={version(n)}" for n in PINNED_CARRY + DEPS_CARRY]  # the versions the tests here ran with
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               python_version, "--implementation", "cp", "-d", tmp, *[a for p in PLATFORMS for a in ("--platform", p)],
               *specs]
        if subprocess.run(cmd).returncode != 0:
            print("error: pip download failed (no package index here?)", file=sys.stderr)
            return 2
        archive = out / "wheels.tar.xz"
        raw = 0
        with tarfile.open(archive, "w:xz", preset=9) as tar:
            for whl in sorted(Path(tmp).glob("*.whl")):
                data = _slim(whl.read_bytes(), whl.name, cuda)
                raw += whl.stat().st_size
                info = tarfile.TarInfo(whl.name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    others = [p.name for p in out.iterdir() if p != archive]
    tree = _travelling_bytes(root, out.resolve())
    size = archive.stat().st_size
    print(f"wrote {archive}: {len(specs)} wheels, {size / 2**20:.1f} MiB (downloaded {raw / 2**20:.1f} MiB); "
          f"with the working tree ({tree / 2**20:.1f} MiB) a device call carries {(size + tree) / 2**20:.1f} MiB "
          f"of {CALL_LIMIT / 2**20:.0f}")
    if others:
        print(f"note: {out} also holds {', '.join(others)}: they travel too when it is carried", file=sys.stderr)
    if size + tree > CALL_LIMIT:
        print("error: over the device call's limit", file=sys.stderr)
        return 2
    return 0
