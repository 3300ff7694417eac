"""The real images that ship with the sample: where each comes from, what it shows, and
hand-checked questions; converted to PNG by medln/make/sample.py at build time only.

The originals are permissively licensed files inside packages installed only to build:
pydicom (its test files), pydicom-data and scikit-image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MAX_REAL_PX = 512


@dataclass(frozen=True)
class RealImage:
    """A real image that may ship: where it comes from, what it shows, hand-checked QA."""

    name: str  # PNG name under images/ (without the "real-" prefix)
    package: str  # installable package that carries the original
    file: str  # file name inside that package
    licence: str
    shows: str  # caption for the app and the attribution file
    questions: tuple[tuple[str, str, str, str], ...]  # (question, answer, answer_type, question_type)
    frame: int | None = None  # multi-frame DICOM: which frame
    # None: as medln.data.images.load_image shows it (header VOI, middle frame); else our own
    # rendering with (centre, width) after the modality LUT, or "percentiles" (0.5 .. 99.5 %).
    window: tuple[float, float] | str | None = None


# Each question was checked by looking at the converted PNG and, where it says so, the
# DICOM header (ViewPosition, Laterality, ImageType, ContrastBolusAgent, descriptions).
REAL: tuple[RealImage, ...] = (
    RealImage("chest_xray_pa", "pydicom-data", "RG1_UNCI.dcm", "MIT",
              "Chest radiograph, PA view (computed radiography): multiple round opacities in both lungs.",
              (("What imaging modality is this?", "x-ray", "OPEN", "MODALITY"),
               ("What part of the body is imaged?", "chest", "OPEN", "ORGAN"),
               ("What view is this radiograph?", "pa", "OPEN", "PLANE"),  # ViewPosition PA
               ("Are there round opacities in the lungs?", "yes", "CLOSED", "PRES"),
               ("Are both lungs involved?", "yes", "CLOSED", "POS"),
               ("Is this a CT scan?", "no", "CLOSED", "MODALITY"))),
    RealImage("tibia_xray_ap", "pydicom-data", "RG3_UNCI.dcm", "MIT",
              "Radiograph of the right lower leg, AP view: non-ossifying fibroma of the distal tibia.",
              (("What imaging modality is this?", "x-ray", "OPEN", "MODALITY"),
               ("Which bone has the lesion?", "tibia", "OPEN", "POS"),  # StudyDescription
               ("What view is this radiograph?", "ap", "OPEN", "PLANE"),  # ViewPosition AP
               ("Which side is imaged?", "right", "OPEN", "POS"),  # Laterality R, R marker
               ("Is there a lesion in the distal tibia?", "yes", "CLOSED", "PRES"),
               ("Is this a chest radiograph?", "no", "CLOSED", "ORGAN"))),
    RealImage("liver_lesion_mri", "pydicom", "examples_overlay.dcm", "MIT",
              "Axial contrast-enhanced T1 MRI of the upper abdomen: a round lesion in the liver.",
              (("What imaging modality is this?", "mri", "OPEN", "MODALITY"),
               ("What part of the body is imaged?", "abdomen", "OPEN", "ORGAN"),
               ("What plane is this image in?", "axial", "OPEN", "PLANE"),  # orientation [1,0,0,0,1,0]
               ("In which organ is the lesion?", "liver", "OPEN", "POS"),  # "abdomen^liver", "marked lesion"
               ("Is there a lesion in the liver?", "yes", "CLOSED", "PRES"),
               ("Are both kidneys visible?", "yes", "CLOSED", "PRES"),
               ("Is this a CT scan?", "no", "CLOSED", "MODALITY"))),
    RealImage("spine_ct_axial", "pydicom", "CT_small.dcm", "MIT",
              "Axial contrast-enhanced CT, small field of view centred on a vertebra.",
              (("What imaging modality is this?", "ct", "OPEN", "MODALITY"),
               ("What plane is this image in?", "axial", "OPEN", "PLANE"),  # ImageType AXIAL
               ("Is a vertebra shown?", "yes", "CLOSED", "PRES"),
               ("Was intravenous contrast given?", "yes", "CLOSED", "ATTRIB"),  # ContrastBolusAgent ISOVUE300
               ("Is this an MRI?", "no", "CLOSED", "MODALITY")),
              window=(200.0, 1200.0)),
    RealImage("head_ct_perfusion", "pydicom-data", "eCT_Supplemental.dcm", "MIT",
              "Axial CT perfusion map of the brain (regional cerebral blood flow), first frame.",
              (("What imaging modality is this?", "ct", "OPEN", "MODALITY"),
               ("What part of the body is imaged?", "head", "OPEN", "ORGAN"),  # Anatomic Region: Brain
               ("What plane is this image in?", "axial", "OPEN", "PLANE"),
               ("Is this a perfusion map?", "yes", "CLOSED", "ATTRIB"),  # Frame Type PERFUSION RCBF
               ("Is this an image of the chest?", "no", "CLOSED", "ORGAN")),
              frame=0, window=(49.0, 102.0)),  # the frame's own VOI window
    RealImage("head_mri_t1", "pydicom-data", "emri_small.dcm", "MIT",
              "T1-weighted MRI of the head (64 x 64), one frame of a small multi-frame series.",
              (("What imaging modality is this?", "mri", "OPEN", "MODALITY"),
               ("What part of the body is imaged?", "head", "OPEN", "ORGAN"),  # BodyPartExamined HEAD
               ("Is this a T1-weighted image?", "yes", "CLOSED", "ATTRIB"),  # AcquisitionContrast T1
               ("Is this an x-ray?", "no", "CLOSED", "MODALITY")),
              frame=0),
    RealImage("shoulder_mri", "pydicom-data", "MR2_UNCI.dcm", "MIT",
              "Oblique coronal T1-weighted spin-echo MRI of the shoulder.",
              (("What imaging modality is this?", "mri", "OPEN", "MODALITY"),
               ("Which joint is shown?", "shoulder", "OPEN", "ORGAN"),  # StudyDescription SHOULDER
               ("What plane is this image in?", "coronal", "OPEN", "PLANE"),  # column vector = feet-head
               ("Is the humeral head visible?", "yes", "CLOSED", "PRES"),
               ("Is this a T1-weighted image?", "yes", "CLOSED", "ATTRIB"),  # ProtocolName T1W/SE
               ("Is this a CT scan?", "no", "CLOSED", "MODALITY"))),
    RealImage("bone_scan", "pydicom", "JPEG2000.dcm", "MIT",
              "Whole-body bone scintigraphy (nuclear medicine).",
              (("What imaging modality is this?", "nuclear medicine", "OPEN", "MODALITY"),
               ("What part of the body is imaged?", "whole body", "OPEN", "ORGAN"),
               ("Is this a whole-body bone scan?", "yes", "CLOSED", "ATTRIB"),  # StudyDescription
               ("Is this an MRI?", "no", "CLOSED", "MODALITY")),
              window="percentiles"),  # no VOI in the header; min..max lets the bladder hide the skeleton
    RealImage("lymph_node_doppler", "pydicom", "examples_rgb_color.dcm", "MIT",
              "Colour Doppler ultrasound of a lymph node (burned-in label).",
              (("What imaging modality is this?", "ultrasound", "OPEN", "MODALITY"),
               ("What structure is shown?", "lymph node", "OPEN", "ORGAN"),
               ("Is colour Doppler flow shown?", "yes", "CLOSED", "ATTRIB"),
               ("Is this an x-ray?", "no", "CLOSED", "MODALITY"))),
    RealImage("fundus_left_eye", "scikit-image", "retina.jpg", "CC0 1.0",
              "Fundus photograph of a normal left eye (Wikimedia Commons via scikit-image).",
              (("What imaging modality is this?", "fundus photography", "OPEN", "MODALITY"),
               ("Which organ is shown?", "eye", "OPEN", "ORGAN"),
               ("Which eye is this?", "left", "OPEN", "POS"),  # source title; optic disc on the left
               ("Is the optic disc visible?", "yes", "CLOSED", "PRES"),
               ("Is this fundus normal?", "yes", "CLOSED", "ABN"),
               ("Is this a CT scan?", "no", "CLOSED", "MODALITY"))),
    RealImage("colon_ihc", "scikit-image", "ihc.png", "no known copyright restrictions (scikit-image data)",
              "Immunohistochemistry of colonic glands (FHL2, DAB brown, haematoxylin counterstain).",
              (("What kind of image is this?", "pathology", "OPEN", "MODALITY"),
               ("Which organ is shown?", "colon", "OPEN", "ORGAN"),
               ("Is brown DAB staining present?", "yes", "CLOSED", "PRES"),
               ("Is this an MRI?", "no", "CLOSED", "MODALITY"))),
)


def _window(values: np.ndarray, window: tuple[float, float] | str | None, ds) -> np.ndarray:
    """Map modality values to 0..1 with a VOI window: given, from the header, or percentiles."""
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        first = lambda key: float(ds[key].value[0] if ds[key].VM > 1 else ds[key].value)  # noqa: E731
        window = (first("WindowCenter"), first("WindowWidth"))  # several windows: the first
    if window is None or window == "percentiles":
        lo, hi = np.percentile(values, [0.5, 99.5])
    else:
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    return np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def dicom_to_image(path: Path, *, frame: int | None = None, window: tuple[float, float] | str | None = None) -> Image.Image:
    """A DICOM file -> 8-bit PIL image (RGB kept; MONOCHROME1 inverted; one frame).

    Only for what `medln.data.images.load_image` does not offer: a chosen frame, a stated
    window, a per-frame VOI in enhanced multi-frame objects, or percentile windowing."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if ds.PhotometricInterpretation in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        return Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="RGB")
    if frame is not None and arr.ndim == 3:
        arr = arr[frame]
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        values = apply_modality_lut(arr, ds).astype(np.float64)
    elif "SharedFunctionalGroupsSequence" in ds:  # enhanced multi-frame: rescale per frame
        pvt = ds.SharedFunctionalGroupsSequence[0].get("PixelValueTransformationSequence")
        if pvt is None:
            pvt = ds.PerFrameFunctionalGroupsSequence[frame or 0].PixelValueTransformationSequence
        values = arr.astype(np.float64) * float(pvt[0].RescaleSlope) + float(pvt[0].RescaleIntercept)
    else:
        values = arr.astype(np.float64)
    grey = _window(values, window, ds)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        grey = 1.0 - grey
    return Image.fromarray(np.round(grey * 255).astype(np.uint8), mode="L")


def _source_path(r: RealImage) -> Path:
    if r.package == "scikit-image":
        import skimage

        return Path(skimage.__file__).parent / "data" / r.file
    from pydicom.data import get_testdata_file  # pydicom-data registers itself as an external source

    found = get_testdata_file(r.file)
    if found is None:
        raise FileNotFoundError(f"{r.file} not found: pip install {r.package}")
    return Path(found)


def convert_real(r: RealImage) -> Image.Image:
    from ..data.images import load_image

    src = _source_path(r)
    if src.suffix.lower() == ".dcm" and (r.frame is not None or r.window is not None):
        image = dicom_to_image(src, frame=r.frame, window=r.window)
    else:
        image = load_image(src)  # RGB; store greyscale sources as "L" (a third of the bytes)
        r_, g, b = image.split()
        if r_.tobytes() == g.tobytes() == b.tobytes():
            image = r_
    if max(image.size) > MAX_REAL_PX:
        image.thumbnail((MAX_REAL_PX, MAX_REAL_PX), Image.Resampling.LANCZOS)
    return image


def build_real(out_dir: Path, *, convert: bool) -> list[RealImage]:
    """Convert the real images (convert=True) or keep the committed PNGs; write real.jsonl."""
    kept, records = [], []
    for r in REAL:
        rel = f"images/real-{r.name}.png"
        if convert:
            save_png(convert_real(r), out_dir / rel)
        if not (out_dir / rel).is_file():
            continue
        kept.append(r)
        for j, (q, a, at, qt) in enumerate(r.questions):
            records.append({"id": f"real-{r.name}-q{j}", "image": rel, "question": q, "answer": a, "answer_type": at,
                            "question_type": qt, "synthetic": False, "split": "real",
                            "source": f"{r.package}:{r.file}"})
    if records:
        (out_dir / "real.jsonl").write_text(_jsonl(records), encoding="utf-8")
    return kept


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
