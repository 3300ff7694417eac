"""`hf:DATASET_ID[@REVISION][:CONFIG]` — a dataset on the Hugging Face Hub, through `datasets`.

Columns are mapped like the parquet layouts: `image` (or `images`, first one), `question`,
`answer`, optional `answer_type` / `question_type` (else yes/no answers are CLOSED). A dataset
with a `report` or `findings` (+ `impression`) column gives report samples instead.
The split "validation" also matches a dataset split named "val" or "valid".
`@REVISION` (a branch, tag or commit) goes to load_dataset(revision=...); the commit the data
came from (datasets names its cache folder by it) is recorded in `Loaded.revision`.

Offline it fails fast: `datasets` would otherwise retry the Hub for tens of seconds. We first
send one HEAD request to the endpoint (HF_ENDPOINT, default huggingface.co) with a short
timeout, in a thread so a hanging DNS lookup cannot block us. Unreachable, or offline mode set
(`offline_mode`: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE, as huggingface_hub reads them; or
HF_DATASETS_OFFLINE), and no request is sent: we load from the local `datasets` cache with
offline mode forced, or raise a DataError that says what to do. The token (hub_token: HF_TOKEN, the older
HUGGING_FACE_HUB_TOKEN, or the one `hf auth login` saved) never appears in a message.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from medln.data.loaded import BadField, Loaded, SplitBuilder, text
from medln.data.pathvqa import image_value, vqa_row
from medln.data.sample import DataError, Sample

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 3.0
SPLIT_ALIASES = {"validation": ("validation", "val", "valid"), "train": ("train",), "test": ("test",)}
_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = {"1", "ON", "YES", "TRUE"}


def load(path: str, split: str, *, skip_bad: bool = False) -> Loaded:
    dataset_id, _, config = path.removeprefix("hf:").partition(":")
    dataset_id, at, revision = dataset_id.partition("@")
    if not _DATASET_ID.match(dataset_id) or (at and not re.fullmatch(r"[\w./-]+", revision)):
        raise DataError(f"hf:{path}: expected hf:DATASET_ID[@REVISION][:CONFIG], e.g. hf:flaviagiammarino/vqa-rad")
    where = f"hf:{dataset_id}" + (f"@{revision}" if revision else "") + (f":{config}" if config else "")
    cache_dir = datasets_cache_dir()
    offline_set = offline_mode() or _env_true("HF_DATASETS_OFFLINE")
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    offline = offline_set or not hub_reachable(endpoint)
    if offline and not _in_cache(cache_dir, dataset_id):
        why = OFFLINE_SET if offline_set else f"the Hugging Face Hub ({endpoint}) is not reachable"
        raise DataError(
            f"{where}: {why} and the dataset is not in the local cache ({cache_dir}). Download it "
            "once with a connection, or point at a local copy (e.g. pathvqa:FOLDER, vqa-rad:FOLDER, jsonl:FILE)."
        )
    dataset_dict = _load_dataset_dict(dataset_id, config or None, cache_dir, offline=offline, where=where,
                                      revision=revision or None)
    names = [name for name in SPLIT_ALIASES.get(split, (split,)) if name in dataset_dict]
    if not names:
        raise DataError(f"{where}: no split {split!r}; the dataset has {', '.join(dataset_dict)}")
    from medln.revisions import dataset_commit

    commit = dataset_commit(dataset_dict[names[0]])
    if offline and revision and commit and re.fullmatch(r"[0-9a-f]{40}", revision) and commit != revision:
        # offline, datasets takes the latest cached copy whatever revision was asked for
        raise DataError(f"{where}: offline, and the local cache holds commit {commit}, not {revision}")
    loaded = samples_from_dataset(dataset_dict[names[0]], split, where=where, skip_bad=skip_bad)
    loaded.revision = {"source": "hub", "id": dataset_id, "config": config or None, "requested": revision or None,
                       "commit": commit}
    if offline:
        loaded.notes.append(f"loaded from the local datasets cache ({cache_dir}): the Hub was not used"
                            + (f"; revision {revision} could not be checked there" if revision and not commit else ""))
    return loaded


def samples_from_dataset(dataset, split: str, *, where: str, skip_bad: bool) -> Loaded:
    """A `datasets.Dataset` -> Loaded, with the column mapping in the module docstring."""
    from datasets import Image as ImageFeature, List, Sequence

    columns = {c.lower(): c for c in dataset.column_names}
    image_column = columns.get("image") or columns.get("images")
    if image_column is None:
        raise DataError(f"{where} [{split}]: no image column (has {', '.join(dataset.column_names)})")
    # Keep images encoded ({"bytes", "path"}): decoding all of them here would hold every
    # image in memory as pixels. load_image decodes (and size-checks) them one by one.
    feature = dataset.features[image_column]
    if isinstance(feature, ImageFeature):
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    elif isinstance(feature, (List, Sequence)) and isinstance(feature.feature, ImageFeature):
        dataset = dataset.cast_column(image_column, List(ImageFeature(decode=False)))
    is_report = "report" in columns or "findings" in columns
    if not is_report and not ("question" in columns and "answer" in columns):
        raise DataError(
            f"{where} [{split}]: expected question + answer columns (VQA) or report / findings "
            f"(report generation); has {', '.join(dataset.column_names)}"
        )
    id_column = columns.get("id") or columns.get("qid")
    build = SplitBuilder(where=f"{where} [{split}]", split=split, skip_bad=skip_bad)
    for index, raw in enumerate(dataset):
        row = {key.lower(): value for key, value in raw.items()}
        row["image"] = row.get(image_column.lower())
        record_id = str(row[id_column.lower()]) if id_column and row.get(id_column.lower()) is not None else f"{split}-{index}"
        with build.record(record_id):
            images = row["image"] if isinstance(row["image"], list) else [row["image"]]
            if not images:
                raise BadField(image_column, "empty image list")
            row["image"] = images[0]
            if is_report:
                build.add(_report_row(row, record_id, len(images), where))
            else:
                build.add(vqa_row(row, record_id, image_root=Path("."), source=where))
    return build.finish()


def _report_row(row: dict, record_id: str, image_count: int, where: str) -> Sample:
    report = text(row, "report", required=False)
    if report is None:
        findings = text(row, "findings", required=False)
        impression = text(row, "impression", required=False)
        if not findings and not impression:
            raise BadField("report", "no report, findings or impression text")
        report = " ".join(part for part in (findings, impression) if part)
    return Sample(
        id=record_id,
        image=image_value(row["image"], Path(".")),
        answer=report,
        question=None,
        task="report",
        meta={"source": where, "image_count": image_count},
    )


# --- reaching the Hub, or not -----------------------------------------------------------------

OFFLINE_SET = "offline mode is set (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE or HF_DATASETS_OFFLINE)"


def offline_mode() -> bool:
    """Offline mode exactly as huggingface_hub decides it, and through it transformers:
    HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE, read once when huggingface_hub is imported
    (huggingface_hub.constants.HF_HUB_OFFLINE). Set, MedLN sends no request either."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)



def hub_reachable(endpoint: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Does the endpoint answer an HTTP request (any status) within `timeout` seconds?

    HTTP rather than a bare TCP connect: some networks accept every connection and then stay
    silent, which `datasets` would wait out for tens of seconds. urllib honours the proxy
    variables (HTTPS_PROXY, NO_PROXY) as `datasets` does. No token is sent.
    """
    if not urlparse(endpoint).hostname:
        return False
    answered: list[bool] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout):
                answered.append(True)
        except urllib.error.HTTPError:  # 4xx / 5xx: the server is there
            answered.append(True)
        except (OSError, ValueError):  # URLError, refused, timeout, DNS failure, bad URL
            pass

    # getaddrinfo has no timeout of its own: a daemon thread we stop waiting for bounds it.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answered)


def datasets_cache_dir() -> Path:
    """Where `datasets` keeps prepared datasets (same rule as datasets.config, read now)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "datasets"


def _in_cache(cache_dir: Path, dataset_id: str) -> bool:
    # datasets stores "org/Name" as "org___name" (datasets.naming.camelcase_to_snakecase,
    # repeated here: importing datasets takes seconds and this check must be fast).
    *namespace, name = dataset_id.split("/")
    name = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)).lower()
    folder = cache_dir / "___".join([*namespace, name])
    return folder.is_dir() and any(p.is_dir() for p in folder.glob("*/*/*"))


def hub_token() -> str | None:
    """The Hub token for gated models and datasets: HF_TOKEN (or the older
    HUGGING_FACE_HUB_TOKEN), else the one `hf auth login` saved (huggingface_hub.get_token reads
    the token file, HF_TOKEN_PATH included). Never printed or logged."""
    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if env:
        return env
    try:
        from huggingface_hub import get_token

        return get_token() or None
    except Exception:  # an unreadable token file is no token, not a crash
        return None


def _token() -> str | bool:
    # False (not None): no token at all, so huggingface_hub does not look again.
    return hub_token() or False


def _load_dataset_dict(dataset_id: str, config: str | None, cache_dir: Path, *, offline: bool, where: str,
                       revision: str | None = None):
    import datasets

    token = _token()
    try:
        with _forced_offline(offline):
            return datasets.load_dataset(dataset_id, config, cache_dir=str(cache_dir), token=token, revision=revision)
    except Exception as e:  # DatasetNotFoundError, ConnectionError, ValueError (config), ...
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        if isinstance(token, str) and token:
            message = message.replace(token, "***")
        state = "from the local cache (Hub unreachable)" if offline else "from the Hub"
        raise DataError(f"{where}: could not load the dataset {state}: {message}") from None


@contextlib.contextmanager
def _forced_offline(offline: bool) -> Iterator[None]:
    """Offline mode is read from the environment when `datasets` / `huggingface_hub` are
    imported; flip their module flags so the cache is used without any network retry."""
    if not offline:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in _TRUE
