"""Format loaders and image decoding, on small fixtures built in tmp_path in each native format.

No benchmark data: every JSON, parquet, XML, PNG/JPEG/TIFF and DICOM file is written here.
"""

from __future__ import annotations

import importlib
import io
import json
import socket
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medln.data import hub, images, iu_xray, load_samples, pathvqa, slake, vqa_rad
from medln.data.images import load_image
from conftest import copy_dataset
from medln.data.sample import DataError

# --- builders -----------------------------------------------------------------------------------


def png_bytes(color=(200, 30, 30), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_jpg(path: Path, color=(10, 120, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path, format="JPEG")
    return path


def write_parquet(path: Path, rows: list[dict], columns=("image", "question", "answer")) -> Path:
    """HF layout: image is a struct {bytes, path}, as `datasets` writes the Image feature."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    types = {"image": image_type, "question": pa.string(), "answer": pa.string()}
    schema = pa.schema([(c, types[c]) for c in columns])
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema)
    pq.write_table(table, path)
    return path


def cache_as_hub_dataset(tmp_path: Path, splits, cache: Path, revision: str | None = None) -> Path:
    """A one-row parquet dataset prepared by `datasets`, moved to where hub id someorg/tiny-set's
    cache lives under CACHE (revision folder: REVISION, else the prepared fingerprint)."""
    import shutil

    import datasets

    rows = [{"image": {"bytes": png_bytes(), "path": None}, "question": "mass?", "answer": "no"}]
    files = {split: str(write_parquet(tmp_path / f"{split}.parquet", rows)) for split in splits}
    datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "scratch"))
    prepared = next(p for p in (tmp_path / "scratch" / "parquet").glob("*/*/*") if p.is_dir())
    target = cache / "someorg___tiny-set" / "default" / "0.0.0" / (revision or prepared.name)
    target.mkdir(parents=True)
    for file in prepared.iterdir():
        shutil.copy(file, target / file.name.replace("parquet-", "tiny-set-"))
    info = json.loads((target / "dataset_info.json").read_text())
    info.update(config_name="default", dataset_name="tiny-set")
    (target / "dataset_info.json").write_text(json.dumps(info))
    return target


def write_dicom(path: Path, arr: np.ndarray, photometric="MONOCHROME2", bits_stored=None, **tags) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    if arr is not None:
        ds.set_pixel_data(arr, photometric_interpretation=photometric, bits_stored=bits_stored or arr.itemsize * 8)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def pixel(image: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    return image.getpixel(xy)


# --- images: PNG / JPEG / TIFF ------------------------------------------------------------------


def test_png_bytes_jpeg_and_tiff_load_as_rgb(tmp_path):
    assert pixel(load_image(png_bytes((200, 30, 30)))) == (200, 30, 30)
    jpg = load_image(write_jpg(tmp_path / "a.jpg"))
    assert jpg.size == (16, 16) and jpg.mode == "RGB"
    Image.new("RGB", (4, 4), (0, 255, 0)).save(tmp_path / "rgb.tif")
    assert pixel(load_image(tmp_path / "rgb.tif")) == (0, 255, 0)
    grey = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))  # 16-bit
    grey.save(tmp_path / "grey16.tif")
    out = load_image(tmp_path / "grey16.tif")
    # stretched over the image's own range, not clipped at 255 as convert("RGB") would
    assert pixel(out, (0, 0)) == (0, 0, 0) and pixel(out, (1, 1)) == (255, 255, 255)
    assert pixel(out, (1, 0))[0] == round(1000 / 4000 * 255)


def test_unreadable_and_unsupported_images_name_where(tmp_path):
    with pytest.raises(DataError, match=r"record 7: unreadable image"):
        load_image(b"not an image at all", where="record 7")
    (tmp_path / "broken.png").write_bytes(png_bytes()[:40])
    with pytest.raises(DataError, match=r"broken\.png"):
        load_image(tmp_path / "broken.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "x.pcx")  # PIL reads PCX; we do not accept it
    with pytest.raises(DataError, match=r"x\.pcx: unsupported image format PCX"):
        load_image(tmp_path / "x.pcx")
    with pytest.raises(DataError, match=r"missing\.png: unreadable"):
        load_image(tmp_path / "missing.png")


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG that claims width x height but holds one row of pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    row = zlib.compress(b"\0" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    # 10,000 x 10,000 = 100 M pixels > MAX_PIXELS; the file itself is under 100 bytes.
    with pytest.raises(DataError, match=r"bomb\.png: image too large \(10000x10000 = 100,000,000 pixels"):
        load_image(_png_header_only(10_000, 10_000), where="bomb.png")
    # Past PIL's own limit too (PIL raises at open): still our DataError.
    with pytest.raises(DataError, match=r"huge: image too large"):
        load_image(_png_header_only(100_000, 100_000), where="huge")


def test_thin_strips_refused_before_decoding(monkeypatch):
    """A 65,000 x 1 strip is under MAX_PIXELS, but a processor scales its short side up to
    its input size (65,000*336 x 336 in LLaVA's): refused, with the reason (issue 25)."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (_ for _ in ()).throw(AssertionError("decoded")))
    with pytest.raises(DataError, match=r"strip: image of 65000x1 pixels is too thin \(sides more than 50:1"):
        load_image(_png_header_only(65_000, 1), where="strip")
    with pytest.raises(DataError, match=r"its header claims more than 178,956,970 pixels; the limit is 64,000,000"):
        load_image(_png_header_only(100_000, 100_000), where="huge")


@pytest.mark.parametrize("make", [
    lambda b: Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(b, "PNG"),
    lambda b: Image.new("CMYK", (64, 48), (10, 200, 30, 5)).save(b, "JPEG"),
    lambda b: Image.new("CMYK", (64, 48), (10, 200, 30, 5)).save(b, "TIFF"),
    lambda b: Image.new("LA", (64, 48)).save(b, "PNG"),
    lambda b: Image.new("P", (64, 48)).save(b, "PNG", transparency=0),
    lambda b: Image.new("1", (64, 48)).save(b, "PNG"),
    lambda b: Image.new("F", (64, 48)).save(b, "TIFF"),
    *[lambda b, fmt=fmt: Image.new("RGB", (64, 48), (9, 0, 0)).save(
        b, fmt, save_all=True, append_images=[Image.new("RGB", (64, 48), (i, 0, 0)) for i in range(30)])
      for fmt in ("GIF", "PNG", "WEBP")],  # animated: the first frame
], ids=["16-bit", "cmyk-jpeg", "cmyk-tiff", "LA", "P-transparency", "1-bit", "float", "gif", "apng", "webp"])
def test_odd_modes_decode_to_rgb(make):
    buffer = io.BytesIO()
    make(buffer)
    image = load_image(buffer.getvalue(), where="upload")
    assert image.mode == "RGB" and image.size in ((64, 64), (64, 48))


def test_file_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 100)
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(size=(64, 64)) + b"\0" * 200)
    with pytest.raises(DataError, match=r"big\.png: image file too large"):
        load_image(path)
    with pytest.raises(DataError, match=r"too large"):
        load_image(path.read_bytes(), where="row 3")


# --- images: DICOM --------------------------------------------------------------------------------


def test_dicom_rescale_then_window(tmp_path):
    # CT-like: stored 0 / 1064 / 3000, HU = stored - 1024, soft-tissue window 40/400.
    arr = np.array([[0, 1064], [3000, 1024 + 40 - 200]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "ct.dcm", arr, bits_stored=12,
        RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400,
    )
    out = load_image(path)
    assert pixel(out, (0, 0)) == (0, 0, 0)  # -1024 HU, below the window
    assert abs(pixel(out, (1, 0))[0] - 128) <= 1  # 40 HU: the window centre
    assert pixel(out, (0, 1)) == (255, 255, 255)  # 1976 HU, above
    # Had the rescale been skipped, stored 1064 would be far above 40 + 200 -> 255.
    assert pixel(out, (1, 1))[0] <= 1  # -160 HU: the window's lower edge


def _hand_window(values, center, width, function):
    """MedLN's earlier hand-written DICOM windowing (PS3.3 C.11.2.1.2), kept as the reference
    that pydicom's apply_windowing, which replaced it, must equal."""
    if function == "SIGMOID":
        with np.errstate(over="ignore"):
            y = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        y = (values - (center - width / 2)) / width
    else:
        y = (values - (center - 0.5)) / max(width - 1, 1e-9) + 0.5
    return np.round(np.clip(y, 0.0, 1.0) * 255).astype(np.uint8)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_dicom_window_is_pydicoms_and_equals_the_hand_written_one(function):
    """Equal on 4,001 values x 6 windows; the one exception is LINEAR_EXACT at an exact tie
    (the grey level is k + 1/2: its formula's floating-point steps differ from pydicom's by an
    ulp, and the rounding goes the other way), 1 grey level, checked with exact fractions."""
    from fractions import Fraction

    from pydicom.dataset import Dataset

    values = np.linspace(-2000.0, 2000.0, 4001)  # 4,001 modality values, a step of 1 (HU-like)
    windows = [(40, 400), (-600, 1500), (127.5, 256), (0, 1), (37.3, 2.5), (1000, 4000)]
    ties = 0
    for center, width in windows:
        ds = Dataset()
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
        got = images._window(values, ds)
        assert got is not None and got.dtype == np.uint8
        want = _hand_window(values, center, width, function)
        for i in np.nonzero(got != want)[0]:
            c, w = Fraction(ds.WindowCenter), Fraction(ds.WindowWidth)
            exact = (Fraction(values[i]) - (c - w / 2)) / w * 255
            assert function == "LINEAR_EXACT" and exact % 1 == Fraction(1, 2), (center, width, values[i])
            assert abs(int(got[i]) - int(want[i])) == 1
            ties += 1
    assert ties <= 5  # 5 of 24,006 values here


def test_dicom_window_that_cannot_apply_stretches_the_image():
    from pydicom.dataset import Dataset

    values = np.array([[0.0, 50.0], [100.0, 200.0]])
    for tags in ({"WindowCenter": 40, "WindowWidth": 0.5},  # LINEAR needs a width >= 1
                 {"WindowCenter": 40, "WindowWidth": 0, "VOILUTFunction": "SIGMOID"},
                 {"WindowCenter": 40, "WindowWidth": 100, "VOILUTFunction": "GAMMA"},  # not a DICOM function
                 {"WindowCenter": 40}):  # no width
        ds = Dataset()
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        assert images._window(values, ds) is None, tags
        assert images._voi_to_uint8(values, ds).tolist() == [[0, 64], [128, 255]]  # min..max stretched


def test_dicom_monochrome1_is_inverted(tmp_path):
    arr = np.array([[0, 1000], [500, 1000]], dtype=np.uint16)
    out = load_image(write_dicom(tmp_path / "cr.dcm", arr, photometric="MONOCHROME1", bits_stored=10))
    assert pixel(out, (0, 0)) == (255, 255, 255)  # lowest value is white in MONOCHROME1
    assert pixel(out, (1, 0)) == (0, 0, 0)


def test_dicom_multiframe_gives_middle_frame(tmp_path):
    frames = np.stack([np.full((4, 4), v, dtype=np.uint16) for v in (10, 100, 200)])
    path = write_dicom(
        tmp_path / "mf.dcm", frames, bits_stored=16,
        WindowCenter=128, WindowWidth=256, VOILUTFunction="LINEAR_EXACT",
    )
    out = load_image(path)
    assert out.size == (4, 4)
    assert pixel(out)[0] == round(100 / 256 * 255)  # frame 1 of 0..2


def test_dicom_colour_kept_rgb_and_ybr(tmp_path):
    from pydicom.pixels import convert_color_space

    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 220
    rgb[0, 0] = (0, 0, 250)
    out = load_image(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", bits_stored=8))
    assert pixel(out, (0, 0)) == (0, 0, 250) and pixel(out, (1, 1)) == (220, 0, 0)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    out = load_image(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL", bits_stored=8))
    assert np.abs(np.asarray(out, dtype=int) - rgb.astype(int)).max() <= 2  # converted back to RGB


def test_dicom_detected_by_magic_without_suffix(tmp_path):
    arr = np.array([[0, 255]], dtype=np.uint8)
    path = write_dicom(tmp_path / "noext.dcm", arr)
    renamed = path.rename(tmp_path / "IM000001")  # PACS exports often have no suffix
    assert pixel(load_image(renamed), (1, 0)) == (255, 255, 255)
    assert pixel(load_image(renamed.read_bytes(), where="row 0"), (1, 0)) == (255, 255, 255)


def test_dicom_bomb_refused_from_header(tmp_path, monkeypatch):
    import pydicom.pixels

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", no_decoding)
    path = write_dicom(tmp_path / "bomb.dcm", np.zeros((2, 2), dtype=np.uint8))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 10  # pixel data still 4 bytes
    ds.save_as(path)
    with pytest.raises(DataError, match=r"bomb\.dcm: image too large \(10 frame\(s\) of 60000x60000"):
        load_image(path)


def test_dicom_errors_name_the_file(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", None)  # no pixel data (e.g. a structured report)
    with pytest.raises(DataError, match=r"sr\.dcm: DICOM file has no pixel data"):
        load_image(path)
    good = write_dicom(tmp_path / "t.dcm", np.zeros((8, 8), dtype=np.uint16)).read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(good[:-40])
    with pytest.raises(DataError, match=r"trunc\.dcm: unreadable DICOM"):
        load_image(tmp_path / "trunc.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match=r"junk\.dcm: unreadable DICOM"):
        load_image(tmp_path / "junk.dcm")


# --- VQA-RAD ----------------------------------------------------------------------------------------


def rad_record(qid, phrase, link, answer_type="CLOSED", image="a.jpg", **extra):
    record = {
        "qid": qid, "phrase_type": phrase, "qid_linked_id": link, "image_name": image,
        "image_organ": "HEAD", "question": f"question {qid}?", "question_type": "PRES",
        "answer": "yes" if answer_type == "CLOSED" else "left lung", "answer_type": answer_type,
    }
    record.update(extra)
    return record


RAD_RECORDS = [
    rad_record(1, "freeform", "L1"),
    rad_record(2, "para", "L1"),  # paraphrase of a train question: stays
    rad_record(3, "test_freeform", "L2", "OPEN"),
    rad_record(4, "para", "L2", "OPEN"),  # paraphrase of test question 3: must not reach train
    rad_record(5, "test_para", "L3", image="b.jpg"),
    rad_record(6, "freeform", "L4", "OPEN", question_type="PRES, POS", answer=2),  # numeric answer
]


def make_vqa_rad(root: Path, records) -> Path:
    for name in ("a.jpg", "b.jpg"):
        write_jpg(root / "VQA_RAD Image Folder" / name)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    return root


def test_vqa_rad_splits_answer_types_and_leakage(tmp_path):
    root = make_vqa_rad(tmp_path, RAD_RECORDS)
    train = vqa_rad.load(str(root), "train")
    test = vqa_rad.load(str(root), "test")
    assert [s.id for s in train.samples] == ["1", "2", "6"]
    assert [s.id for s in test.samples] == ["3", "5"]
    assert not {s.meta["qid_linked_id"] for s in train.samples} & {s.meta["qid_linked_id"] for s in test.samples}
    assert any("1 train record(s) left out" in note for note in train.notes)
    assert [s.answer_type for s in test.samples] == ["OPEN", "CLOSED"]
    six = train.samples[2]
    assert six.question_type == "PRES, POS" and six.answer == "2" and six.task == "vqa"
    assert test.samples[1].image == root / "VQA_RAD Image Folder" / "b.jpg"
    assert load_image(test.samples[1].image).mode == "RGB"
    assert train.skipped == [] and test.skipped == []
    with pytest.raises(DataError, match=r"VQA-RAD has no split 'validation'"):
        vqa_rad.load(str(root), "validation")


def test_vqa_rad_bad_records_named_or_skipped(tmp_path):
    records = RAD_RECORDS + [
        rad_record(7, "freeform", "L7", image="missing.jpg"),
        rad_record(1, "freeform", "L8"),  # duplicate qid
        rad_record(9, "freeform", "L9", answer_type="MAYBE"),
        rad_record(10, "freeform", "L10", answer=None),
    ]
    root = make_vqa_rad(tmp_path, records)
    json_name = r"VQA_RAD Dataset Public\.json"
    with pytest.raises(DataError, match=rf"{json_name}: record 7: field 'image_name': image file not found: .*missing\.jpg"):
        vqa_rad.load(str(root), "train")
    loaded = vqa_rad.load(str(root), "train", skip_bad=True)
    assert [s.id for s in loaded.samples] == ["1", "2", "6"]
    assert [rid for rid, _ in loaded.skipped] == ["7", "1", "9", "10"]
    reasons = dict(loaded.skipped[1:])
    assert "field 'id': duplicate id '1'" in reasons["1"]
    assert "field 'answer_type'" in reasons["9"] and "MAYBE" in reasons["9"]
    assert reasons["10"] == "field 'answer': missing"


def test_vqa_rad_empty_split_and_wrong_folder(tmp_path):
    root = make_vqa_rad(tmp_path / "rad", [rad_record(1, "freeform", "L1")])
    with pytest.raises(DataError, match=r"split 'test' is empty"):
        vqa_rad.load(str(root), "test")
    with pytest.raises(DataError, match=r"not a VQA-RAD folder"):
        vqa_rad.load(str(tmp_path), "train")


def test_vqa_rad_hf_mirror_parquet(tmp_path):
    rows = [
        {"image": {"bytes": png_bytes(), "path": "synpic1.jpg"}, "question": "is there a mass?", "answer": "Yes"},
        {"image": {"bytes": png_bytes((0, 0, 0)), "path": None}, "question": "which organ?", "answer": "liver"},
    ]
    write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows[:1])
    train = vqa_rad.load(str(tmp_path), "train")
    assert [(s.id, s.answer_type) for s in train.samples] == [("train-0", "CLOSED"), ("train-1", "OPEN")]
    assert isinstance(train.samples[0].image, bytes)
    assert pixel(load_image(train.samples[0].image)) == (200, 30, 30)
    assert len(vqa_rad.load(str(tmp_path), "test").samples) == 1


# --- SLAKE ---------------------------------------------------------------------------------------------


def slake_record(qid, lang="en", img="xmlab1/source.jpg", **extra):
    record = {
        "img_id": 1, "img_name": img, "question": f"q{qid}?", "answer": "Yes" if qid % 2 else "Lung",
        "q_lang": lang, "location": "Lung", "modality": "CT", "answer_type": "CLOSED" if qid % 2 else "OPEN",
        "base_type": "vqa", "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": qid,
    }
    record.update(extra)
    return record


def make_slake(root: Path, train, validate=None, test=None) -> Path:
    write_jpg(root / "imgs" / "xmlab1" / "source.jpg")
    for name, records in (("train", train), ("validate", validate), ("test", test)):
        if records is not None:
            (root / f"{name}.json").write_text(json.dumps(records, ensure_ascii=False))
    return root


def test_slake_english_only_with_fields(tmp_path):
    train = [slake_record(1), slake_record(2), slake_record(3, "zh", question="肺在哪里?"), slake_record(4, "zh")]
    root = make_slake(tmp_path, train, validate=[slake_record(5)])
    loaded = slake.load(str(root), "train")
    assert [s.id for s in loaded.samples] == ["1", "2"]
    assert [s.answer_type for s in loaded.samples] == ["CLOSED", "OPEN"]
    first = loaded.samples[0]
    assert first.question_type == "Organ" and first.meta["modality"] == "CT" and first.meta["location"] == "Lung"
    assert first.image == root / "imgs" / "xmlab1" / "source.jpg"
    assert any("2 non-English" in note for note in loaded.notes)
    assert [s.id for s in slake.load(str(root), "validation").samples] == ["5"]


def test_slake_chinese_only_file_is_an_error(tmp_path):
    root = make_slake(tmp_path, [slake_record(1)], test=[slake_record(7, "zh"), slake_record(8, "zh")])
    with pytest.raises(DataError, match=r"test\.json: all 2 records are Chinese"):
        slake.load(str(root), "test")
    with pytest.raises(DataError, match=r"validate\.json: not found"):
        slake.load(str(root), "validation")


def test_slake_bad_records(tmp_path):
    train = [slake_record(1), slake_record(2, img="xmlab9/source.jpg"), slake_record(3, q_lang=None), slake_record(1)]
    root = make_slake(tmp_path, train)
    with pytest.raises(DataError, match=r"train\.json: record 2: field 'img_name': image file not found"):
        slake.load(str(root), "train")
    loaded = slake.load(str(root), "train", skip_bad=True)
    assert [s.id for s in loaded.samples] == ["1"]
    assert loaded.skipped == [
        ("2", loaded.skipped[0][1]),
        ("3", "field 'q_lang': missing"),
        ("1", "field 'id': duplicate id '1' in split 'train'"),
    ]


# --- PathVQA -----------------------------------------------------------------------------------------


def test_pathvqa_parquet_splits(tmp_path):
    rows = [
        {"image": {"bytes": png_bytes(), "path": None}, "question": "is this necrosis?", "answer": "no"},
        {"image": {"bytes": png_bytes(), "path": None}, "question": "what is present?", "answer": "granuloma"},
    ]
    data = tmp_path / "data"
    write_parquet(data / "train-00000-of-00002.parquet", rows)
    write_parquet(data / "train-00001-of-00002.parquet", rows[:1])
    write_parquet(data / "validation-00000-of-00001.parquet", rows[1:])
    write_parquet(data / "test-00000-of-00001.parquet", rows)
    train = pathvqa.load(str(tmp_path), "train")
    assert [s.id for s in train.samples] == ["train-0", "train-1", "train-2"]  # across shards
    assert [s.answer_type for s in train.samples] == ["CLOSED", "OPEN", "CLOSED"]
    assert len(pathvqa.load(str(tmp_path), "validation").samples) == 1
    assert len(pathvqa.load(str(tmp_path), "test").samples) == 2


def test_pathvqa_bad_rows_missing_columns_and_empty_split(tmp_path):
    data = tmp_path / "data"
    rows = [
        {"image": {"bytes": png_bytes(), "path": None}, "question": "q?", "answer": "yes"},
        {"image": {"bytes": None, "path": None}, "question": "q?", "answer": "yes"},
        {"image": {"bytes": png_bytes(), "path": None}, "question": "", "answer": "yes"},
        {"image": {"bytes": b"garbage", "path": None}, "question": "q?", "answer": "no"},
    ]
    write_parquet(data / "train-00000-of-00001.parquet", rows)
    with pytest.raises(DataError, match=r"train-00000-of-00001\.parquet: record train-1: field 'image': no image bytes"):
        pathvqa.load(str(tmp_path), "train")
    loaded = pathvqa.load(str(tmp_path), "train", skip_bad=True)
    assert [rid for rid, _ in loaded.skipped] == ["train-1", "train-2"]
    assert loaded.skipped[1][1] == "field 'question': empty"
    # Bytes are only checked when decoded, and the error then names the record.
    bad = loaded.samples[-1]
    with pytest.raises(DataError, match=r"pathvqa train-3: unreadable image"):
        load_image(bad.image, where=f"pathvqa {bad.id}")

    write_parquet(data / "test-00000-of-00001.parquet", rows[:1], columns=("image", "question"))
    with pytest.raises(DataError, match=r"test-00000-of-00001\.parquet: missing column\(s\) answer"):
        pathvqa.load(str(tmp_path), "test")
    write_parquet(data / "validation-00000-of-00001.parquet", [])
    with pytest.raises(DataError, match=r"split 'validation' is empty"):
        pathvqa.load(str(tmp_path), "validation")
    with pytest.raises(DataError, match=r"no parquet files for split 'train'"):
        pathvqa.load(str(tmp_path / "nowhere"), "train")


# --- IU-Xray --------------------------------------------------------------------------------------------


def test_iu_xray_r2gen(tmp_path):
    for name in ("CXR1_IM-1/0.png", "CXR1_IM-1/1.png", "CXR2_IM-2/0.png"):
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / name).write_bytes(png_bytes())
    annotation = {
        "train": [
            {"id": "CXR1_IM-1", "report": "The heart is normal in size. No effusion.",
             "image_path": ["CXR1_IM-1/0.png", "CXR1_IM-1/1.png"], "split": "train"},
        ],
        "val": [{"id": "CXR2_IM-2", "report": "No acute disease.", "image_path": ["CXR2_IM-2/0.png"], "split": "val"}],
        "test": [
            {"id": "CXR3", "report": "Clear lungs.", "image_path": ["CXR3/0.png"], "split": "test"},
            {"id": "CXR4", "report": "", "image_path": ["CXR2_IM-2/0.png"], "split": "test"},
        ],
    }
    (tmp_path / "annotation.json").write_text(json.dumps(annotation))
    train = iu_xray.load(str(tmp_path), "train")
    (sample,) = train.samples
    assert sample.task == "report" and sample.is_report and sample.question is None
    assert sample.answer == "The heart is normal in size. No effusion."
    assert sample.image == tmp_path / "images" / "CXR1_IM-1" / "0.png" and sample.meta["image_count"] == 2
    assert [s.id for s in iu_xray.load(str(tmp_path), "validation").samples] == ["CXR2_IM-2"]
    with pytest.raises(DataError, match=r"annotation\.json \[test\]: record CXR3: field 'image_path': image file not found"):
        iu_xray.load(str(tmp_path), "test")
    with pytest.raises(DataError, match=r"split 'test' is empty \(all 2 records were bad"):
        iu_xray.load(str(tmp_path), "test", skip_bad=True)


OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="{uid}"/>
  <MedlineCitation Owner="Indiana University" Status="supplied">
    <Article PubModel="Electronic">
      <Abstract>
        <AbstractText Label="COMPARISON">None.</AbstractText>
        <AbstractText Label="INDICATION">Cough.</AbstractText>
        {findings}
        {impression}
      </Abstract>
    </Article>
  </MedlineCitation>
  {images}
</eCitation>
"""


def write_openi(root: Path, uid: str, findings=None, impression=None, image_ids=("IM-1",), make_images=True):
    folder = root / "ecgen-radiology"
    folder.mkdir(parents=True, exist_ok=True)
    xml = OPENI_XML.format(
        uid=uid,
        findings=f'<AbstractText Label="FINDINGS">{findings}</AbstractText>' if findings else '<AbstractText Label="FINDINGS"/>',
        impression=f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>' if impression else "",
        images="\n".join(f'<parentImage id="{uid}_{i}"><figureId>F1</figureId></parentImage>' for i in image_ids),
    )
    (folder / f"{uid}.xml").write_text(xml)
    if make_images:
        (root / "images").mkdir(exist_ok=True)
        for i in image_ids:
            (root / "images" / f"{uid}_{i}.png").write_bytes(png_bytes())


def test_iu_xray_openi_xml(tmp_path):
    # ids that the stable hash puts in train, so the test does not depend on the split ratio
    train_ids = [f"CXR{n}" for n in range(1, 200) if iu_xray._openi_split(f"CXR{n}") == "train"][:4]
    a, b, c, d = train_ids
    write_openi(tmp_path, a, findings="Heart size normal.", impression="No acute disease.", image_ids=("1", "2"))
    write_openi(tmp_path, b, impression="Normal chest.")
    write_openi(tmp_path, c)  # neither findings nor impression: bad
    write_openi(tmp_path, d, findings="Clear.", make_images=False)  # image missing: bad
    with pytest.raises(DataError, match=rf"{c}\.xml: record {c}: field 'AbstractText': neither FINDINGS nor IMPRESSION"):
        iu_xray.load(str(tmp_path), "train")
    loaded = iu_xray.load(str(tmp_path), "train", skip_bad=True)
    assert {s.id: s.answer for s in loaded.samples} == {
        a: "Heart size normal. No acute disease.",
        b: "Normal chest.",
    }
    first = next(s for s in loaded.samples if s.id == a)
    assert first.image == tmp_path / "images" / f"{a}_1.png" and first.meta["image_count"] == 2
    assert [rid for rid, _ in loaded.skipped] == sorted([c, d], key=lambda x: f"{x}.xml")
    assert any("field 'parentImage': image file not found" in why for _, why in loaded.skipped)
    # The split is a pure function of the id: stable, and every report lands in exactly one split.
    ids = [f"CXR{n}" for n in range(1000)]
    shares = {s: sum(iu_xray._openi_split(i) == s for i in ids) / 1000 for s in ("train", "validation", "test")}
    assert 0.65 < shares["train"] < 0.75 and 0.07 < shares["validation"] < 0.13


def test_iu_xray_wrong_folder(tmp_path):
    with pytest.raises(DataError, match=r"not an IU-Xray folder"):
        iu_xray.load(str(tmp_path), "train")


# --- hf: -------------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:  # bind, read the port, close: nothing listens there now
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    import huggingface_hub.constants

    # huggingface_hub read HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE (conftest sets them) at import:
    # its constant is what MedLN follows (medln.data.hub.offline_mode)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_do_not_print")
    return tmp_path / "hf-cache"


def test_hf_fails_fast_when_hub_unreachable(offline_hub):
    start = time.monotonic()
    with pytest.raises(DataError) as error:
        hub.load("flaviagiammarino/vqa-rad", "train")
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "hf:flaviagiammarino/vqa-rad" in message and "not reachable" in message and "local cache" in message
    assert "hf_secret_do_not_print" not in message


def test_hf_offline_mode_without_cache(offline_hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 at import
    start = time.monotonic()
    with pytest.raises(DataError, match=r"offline mode is set"):
        hub.load("someone/some-set:config", "test")
    assert time.monotonic() - start < 5
    with pytest.raises(DataError, match=r"expected hf:DATASET_ID"):
        hub.load("../../etc", "train")


def test_hf_column_mapping_vqa_and_report():
    from datasets import Dataset, Features, Image as ImageFeature, Value

    features = Features({"image": ImageFeature(), "question": Value("string"), "answer": Value("string")})
    vqa = Dataset.from_dict(
        {"image": [{"bytes": png_bytes(), "path": None}] * 2, "question": ["mass?", "organ?"], "answer": ["yes", "liver"]},
        features=features,
    )
    loaded = hub.samples_from_dataset(vqa, "train", where="hf:x/y", skip_bad=False)
    assert [(s.id, s.answer_type) for s in loaded.samples] == [("train-0", "CLOSED"), ("train-1", "OPEN")]
    assert isinstance(loaded.samples[0].image, bytes)  # kept encoded, decoded by load_image
    assert pixel(load_image(loaded.samples[0].image)) == (200, 30, 30)

    features = Features({"image": ImageFeature(), "findings": Value("string"), "impression": Value("string")})
    reports = Dataset.from_dict(
        {"image": [{"bytes": png_bytes(), "path": None}] * 2, "findings": ["Clear lungs.", None], "impression": ["Normal.", None]},
        features=features,
    )
    with pytest.raises(DataError, match=r"hf:x/y \[test\]: record test-1: field 'report'"):
        hub.samples_from_dataset(reports, "test", where="hf:x/y", skip_bad=False)
    loaded = hub.samples_from_dataset(reports, "test", where="hf:x/y", skip_bad=True)
    assert [s.answer for s in loaded.samples] == ["Clear lungs. Normal."] and loaded.samples[0].task == "report"
    assert [rid for rid, _ in loaded.skipped] == ["test-1"]


def test_hf_falls_back_to_local_cache(offline_hub, tmp_path):
    """A dataset prepared once (here: a parquet load moved to where a hub id's cache lives)
    loads with the Hub unreachable."""


    cache_as_hub_dataset(tmp_path, ("train", "test"), offline_hub)

    start = time.monotonic()
    loaded = hub.load("someorg/tiny-set", "test")
    assert time.monotonic() - start < 10
    assert [(s.id, s.answer, s.answer_type) for s in loaded.samples] == [("test-0", "no", "CLOSED")]
    assert any("local datasets cache" in note for note in loaded.notes)
    with pytest.raises(DataError, match=r"no split 'validation'; the dataset has (train, test|test, train)"):
        hub.load("someorg/tiny-set", "validation")


# ------------------------------------------------------------------ detect(): which loader an upload needs

def test_every_loader_that_reads_a_folder_detects_its_own_layout(tmp_path):
    """The loader registry answers which format an extracted upload holds (medln.data.detect):
    each loader's detect() finds its layout one folder down, as a zip would hold it, and the
    specific layouts win over the generic JSONL they may also contain."""
    from medln.data import LOADERS, detect

    make_vqa_rad(tmp_path / "rad" / "VQA-RAD", RAD_RECORDS)
    make_slake(tmp_path / "slake" / "Slake1.0", [slake_record(1)])
    (tmp_path / "iu" / "iu_xray").mkdir(parents=True)
    (tmp_path / "iu" / "iu_xray" / "annotation.json").write_text("{}")
    write_parquet(tmp_path / "pathvqa" / "pvqa" / "data" / "train-00000-of-00001.parquet",
                  [{"image": {"bytes": png_bytes(), "path": None}, "question": "q?", "answer": "no"}])
    for name in ("train", "test", "source-test"):
        (tmp_path / "sample" / "set").mkdir(parents=True, exist_ok=True)
        (tmp_path / "sample" / "set" / f"{name}.jsonl").write_text("{}\n")
    (tmp_path / "jsonl" / "mine").mkdir(parents=True)
    (tmp_path / "jsonl" / "mine" / "d.jsonl").write_text('{"split": "train"}\n{"split": "validation"}\n')
    expected = {"vqa-rad": "rad/VQA-RAD", "slake": "slake/Slake1.0", "iu-xray": "iu/iu_xray", "pathvqa": "pathvqa/pvqa",
                "sample": "sample/set", "jsonl": "jsonl/mine/d.jsonl"}
    assert set(expected) == {k for k, m in LOADERS.items() if hasattr(importlib.import_module(m), "detect")}
    for kind, where in expected.items():
        found_kind, found = detect(tmp_path / where.split("/")[0])
        assert (found_kind, found.path) == (kind, tmp_path / where), kind
    assert detect(tmp_path / "sample")[1].ood_split == "source-test"  # the sample layout's retention split
    assert detect(tmp_path / "jsonl")[1].eval_split == "validation"  # the splits its lines carry
    (tmp_path / "rad" / "extra.jsonl").write_text("{}\n")
    assert detect(tmp_path / "rad")[0] == "vqa-rad"  # a specific layout beats a stray JSONL
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no supported dataset found in the upload"):
        detect(tmp_path / "empty", "the upload")


# ------------------------------------------------------------------ containment: paths from records stay inside


def _jsonl(folder: Path, image: str) -> Path:
    path = folder / "probe.jsonl"
    path.write_text(json.dumps({"image": image, "question": "q?", "answer": "a"}) + "\n")
    return path


def test_jsonl_images_must_resolve_inside_the_dataset_folder(dataset, tmp_path):
    folder = copy_dataset(dataset, tmp_path)
    outside = tmp_path / "secret.png"
    outside.write_bytes((folder / "images" / "img00.png").read_bytes())  # a real image, outside
    (folder / "images" / "link.png").symlink_to(outside)
    for image in (str(outside), "/etc/no-such-file", "../secret.png", "images/../../secret.png", "images/link.png"):
        with pytest.raises(DataError) as e:
            load_samples(f"jsonl:{_jsonl(folder, image)}", "train")
        msg = str(e.value)
        assert "leads outside the dataset folder" in msg and f"{image!r}" in msg, msg
        assert "not found" not in msg  # the same answer whether or not the file exists
    assert load_samples(f"jsonl:{_jsonl(folder, 'images/img00.png')}", "train").samples  # inside: fine


def test_folder_loaders_refuse_links_out_of_their_image_folder(tmp_path):
    from medln.data.loaded import BadField, image_file

    images = tmp_path / "imgs"
    images.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (images / "ok.jpg").write_bytes(b"x")
    (images / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    assert image_file(images, "ok.jpg", "img_name") == (images / "ok.jpg").resolve()
    for name in ("link.jpg", "../secret.jpg", str(tmp_path / "secret.jpg")):
        with pytest.raises(BadField, match="leads outside the image folder"):
            image_file(images, name, "img_name")
