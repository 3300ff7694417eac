"""Turn an image file or its encoded bytes (PNG, JPEG, TIFF, DICOM) into an RGB PIL image.

Every failure is a `DataError` that names where the image came from (`where`: a file, a
record) and what is wrong: unreadable, too large, or unsupported.

Size is checked twice, both times *before* any pixel is decoded: the encoded size against
`MAX_FILE_BYTES`, then the pixel count from the header (PIL's lazy `Image.open`; DICOM's
Rows x Columns x NumberOfFrames) against `MAX_PIXELS`, so a small file that claims a huge
image (a decompression bomb) is refused without allocating it.

DICOM is rendered the way a viewer shows it (DICOM PS3.3 C.11): Modality LUT (rescale
slope/intercept) first, then the VOI LUT (window centre/width, or a VOI LUT table) mapped to
0..255, both by pydicom; without a usable VOI the frame's own min..max is stretched. MONOCHROME1 is inverted (0 is
white), a multi-frame object yields its middle frame, and colour (RGB, YBR converted to RGB by
pydicom, PALETTE COLOR) is kept.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medln.data.sample import DataError

MAX_PIXELS = 64_000_000  # per decoded image (all frames for DICOM): about 190 MB as 8-bit RGB
MAX_FILE_BYTES = 512 * 2**20  # encoded size; multi-frame DICOMs are the big ones
# Longest side / shortest side. Processors scale the *shortest* side up to their input size
# before cropping: a 65,000 x 1 strip passes MAX_PIXELS but would become 65,000*336 x 336
# pixels in a LLaVA processor. No medical image is that thin.
MAX_ASPECT = 50

# The PIL decoders we accept. Others exist in PIL but are no medical image format and only
# widen the attack surface of user uploads.
PIL_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")  # JPEG also opens MPO
_DICOM_MAGIC_OFFSET = 128  # a DICOM file: 128-byte preamble, then b"DICM"


def load_image(src: Path | str | bytes, *, where: str = "") -> Image.Image:
    """Decode `src` (a path, or the encoded bytes of a file) into an RGB image. An image
    already in memory (the pretraining stream's) passes through as RGB."""
    if isinstance(src, Image.Image):
        return src.convert("RGB")
    if isinstance(src, (bytes, bytearray, memoryview)):
        data, path = bytes(src), None
        where = where or "<image bytes>"
        _check_file_size(len(data), where)
        head = data[: _DICOM_MAGIC_OFFSET + 4]
    else:
        path = Path(src)
        where = where or str(path)
        try:
            _check_file_size(path.stat().st_size, where)
            with path.open("rb") as f:
                head = f.read(_DICOM_MAGIC_OFFSET + 4)
        except OSError as e:
            raise DataError(f"{where}: unreadable image file ({e.strerror or e})") from None
        data = None
    is_dicom = head[_DICOM_MAGIC_OFFSET:] == b"DICM" or (
        path is not None and path.suffix.lower() in (".dcm", ".dicom")
    )
    opener = io.BytesIO(data) if data is not None else path
    if is_dicom:
        return _load_dicom(opener, where, force=head[_DICOM_MAGIC_OFFSET:] != b"DICM")
    return _load_pil(opener, where)


def _check_file_size(n_bytes: int, where: str) -> None:
    if n_bytes > MAX_FILE_BYTES:
        raise DataError(
            f"{where}: image file too large ({n_bytes:,} bytes; the limit is {MAX_FILE_BYTES:,})"
        )


def _check_pixels(n_pixels: int, shape: str, where: str, size: tuple[int, int] | None = None) -> None:
    if n_pixels > MAX_PIXELS:
        raise DataError(
            f"{where}: image too large ({shape} = {n_pixels:,} pixels; the limit is "
            f"{MAX_PIXELS:,}); refused before decoding"
        )
    if size is not None and (min(size) < 1 or max(size) > MAX_ASPECT * min(size)):
        raise DataError(f"{where}: image of {shape} pixels is too thin (sides more than {MAX_ASPECT}:1 apart); "
                        "refused before decoding")


# --- PNG, JPEG, TIFF (PIL) ------------------------------------------------------------------


def _load_pil(src: io.BytesIO | Path, where: str) -> Image.Image:
    with warnings.catch_warnings():
        # PIL warns past its own MAX_IMAGE_PIXELS; our smaller MAX_PIXELS check decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(src, formats=PIL_FORMATS)  # lazy: reads the header only
        except Image.DecompressionBombError:  # past PIL's own bound, twice MAX_IMAGE_PIXELS
            raise DataError(f"{where}: image too large (its header claims more than "
                            f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels; the limit is {MAX_PIXELS:,}); "
                            "refused before decoding") from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise DataError(f"{where}: {_why_not_opened(src)}") from None
        width, height = image.size
        _check_pixels(width * height, f"{width}x{height}", where, (width, height))
        try:
            image.load()  # first frame only (multi-page TIFF / GIF)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... on bad data
            raise DataError(f"{where}: unreadable {image.format} image ({e})") from None
    image = ImageOps.exif_transpose(image)  # camera JPEGs store rotation in EXIF
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # 16-bit / float greyscale (common for medical PNG and TIFF): convert("RGB") would clip
        # at 255, so stretch the image's own range instead.
        return _grey_to_rgb(_stretch(np.asarray(image, dtype=np.float64)))
    return image.convert("RGB")


def _why_not_opened(src: io.BytesIO | Path) -> str:
    """Say 'unsupported' for a format PIL knows but we refuse, else 'unreadable'."""
    if isinstance(src, io.BytesIO):
        src.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(src) as other:  # header only
                return f"unsupported image format {other.format} (expected PNG, JPEG, TIFF or DICOM)"
    except Exception:
        return "unreadable image: not a PNG, JPEG, TIFF or DICOM file, or truncated"


# --- DICOM (pydicom) ------------------------------------------------------------------------


def _load_dicom(src: io.BytesIO | Path, where: str, *, force: bool) -> Image.Image:
    import pydicom  # deferred: only DICOM users pay for the import
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    try:
        ds = pydicom.dcmread(src, force=force)
    except Exception as e:  # InvalidDicomError, EOFError, struct errors on truncated files
        raise DataError(f"{where}: unreadable DICOM file ({e})") from None
    if not any(tag.group >= 0x0008 for tag in ds.keys()):  # force=True parses junk as empty
        raise DataError(f"{where}: unreadable DICOM file (no data elements found)")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(f"{where}: DICOM file has no pixel data (not an image object)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
    except (AttributeError, TypeError, ValueError) as e:
        raise DataError(f"{where}: unreadable DICOM header (Rows/Columns/NumberOfFrames: {e})") from None
    _check_pixels(rows * cols * frames, f"{frames} frame(s) of {cols}x{rows}", where, (cols, rows))
    _ensure_transfer_syntax(ds)

    try:
        # One frame only: decoding a whole multi-frame series to show one slice wastes memory.
        # raw=False: pydicom converts YBR_FULL / YBR_FULL_422 to RGB.
        arr = pixel_array(ds, index=frames // 2)
    except (NotImplementedError, RuntimeError) as e:
        syntax = ds.file_meta.get("TransferSyntaxUID")
        name = getattr(syntax, "name", syntax)
        raise DataError(
            f"{where}: unsupported DICOM compression '{name}' (a decoder plugin such as "
            f"pylibjpeg or gdcm is needed): {str(e).splitlines()[-1].strip()}"
        ) from None
    except Exception as e:  # truncated pixel data, inconsistent group 0028 values
        raise DataError(f"{where}: unreadable DICOM pixel data ({e})") from None

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if samples == 1 and photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey = _voi_to_uint8(apply_modality_lut(arr, ds).astype(np.float64), ds)
        if photometric == "MONOCHROME1":  # MONOCHROME1: the lowest value is white
            grey = 255 - grey
        return _grey_to_rgb(grey)
    if samples == 1 and photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)  # (rows, cols, 3), 8- or 16-bit per the LUT
        return Image.fromarray(_scale_to_uint8(rgb, np.iinfo(rgb.dtype).max))
    if samples == 3:  # RGB, or YBR that pydicom already converted to RGB
        max_value = 2 ** int(ds.get("BitsStored") or 8) - 1
        return Image.fromarray(_scale_to_uint8(arr, max_value))
    raise DataError(
        f"{where}: unsupported DICOM photometric interpretation {photometric!r} "
        f"with {samples} sample(s) per pixel"
    )


def _ensure_transfer_syntax(ds) -> None:
    """A file read with force=True may lack file meta; pydicom needs the syntax to decode."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    if ds.file_meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _voi_to_uint8(values: np.ndarray, ds) -> np.ndarray:
    """Map modality values (e.g. Hounsfield units) to 0..255 through the dataset's VOI."""
    from pydicom.pixels import apply_voi_lut

    if ds.get("VOILUTSequence"):
        out = apply_voi_lut(values, ds, prefer_lut=True)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return _scale_to_uint8(out, 2**bits - 1)
    windowed = _window(values, ds)
    return windowed if windowed is not None else _stretch(values)


def _window(values: np.ndarray, ds) -> np.ndarray | None:
    """The first window (centre / width / VOI LUT function, DICOM PS3.3 C.11.2.1.2) applied by
    pydicom's apply_windowing, to 0..255; None without a usable one (absent, unreadable, a
    width the function does not allow, an unknown function), and the image is stretched instead.

    `values` already went through the Modality LUT, so pydicom is given the window alone, on an
    unsigned 8-bit output range: its output is the 0..255 grey level itself (given the whole
    dataset it would map the window onto the stored pixels' rescaled range)."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    window = Dataset()
    window.PhotometricInterpretation, window.BitsStored, window.PixelRepresentation = "MONOCHROME2", 8, 0
    try:
        for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
            if keyword in ds:
                window[keyword] = ds[keyword]  # as read: several values mean several presets (index 0 is used)
        with np.errstate(over="ignore"):  # SIGMOID far from the centre: exp overflows to inf, the level to 0 (right)
            out = apply_windowing(values, window)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return None  # pydicom refuses: width < 1 (LINEAR) or <= 0, an unknown function, an empty value
    if out is values:  # nothing applied
        return None
    return np.round(np.clip(out, 0.0, 255.0)).astype(np.uint8)


# --- pixel helpers -----------------------------------------------------------------------------


def _stretch(values: np.ndarray) -> np.ndarray:
    """Min..max of the image itself to 0..255 (a constant image becomes black)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - lo) / (hi - lo) * 255).astype(np.uint8)


def _scale_to_uint8(values: np.ndarray, max_value: float) -> np.ndarray:
    if values.dtype == np.uint8 and max_value == 255:
        return values
    scaled = np.clip(values.astype(np.float64), 0, max_value) / max(max_value, 1) * 255
    return np.round(scaled).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(grey)).convert("RGB")  # uint8 2-D -> "L"
