"""The in-distribution check for the bundled demo model (medln.domain): calibrated on some
synthetic images, it must pass held-out and freshly generated phantoms of both styles and
flag every bundled real image, with a reason that names a measured statistic."""

from __future__ import annotations

import pytest
from PIL import Image

from medln import domain
from medln.data.bundled import ASSETS

REAL = sorted((ASSETS / "images").glob("real-*.png"))


@pytest.fixture(scope="module")
def held_out():
    """Calibrated on both targets' train splits and half the source-test split; the rest is held out."""
    train = domain.sample_images(ASSETS, ("scanner-train", "findings-train"))
    (style_src, src_images), = domain.sample_images(ASSETS, ("source-test",)).items()
    assert set(train) == {"scanner", style_src}  # the new-findings target is drawn in the source style
    cal = domain.calibrate({**train, style_src: train[style_src] + src_images[::2]})
    test = [im for ims in domain.sample_images(ASSETS, ("scanner-test", "findings-test")).values() for im in ims]
    return cal, test + src_images[1::2]


def test_held_out_phantoms_pass(held_out):
    cal, images = held_out
    assert len(images) >= 100
    failed = [domain.check_image(im, cal).reason for im in images if not domain.check_image(im, cal).in_domain]
    assert not failed, failed[:3]


def test_freshly_generated_phantoms_pass():
    task = pytest.importorskip("medln.make.task")
    cal = domain.bundled_calibration()
    assert sorted(cal.ranges) == ["scanner", "source"]  # both acquisition styles are calibrated
    for name in task.DOMAINS:
        for i in range(20):  # a stream seed no committed split uses
            image = task.make_study(4242, i, name).image
            check = domain.check_image(image, cal)
            assert check.in_domain, (name, i, check.reason)


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_real_images_are_flagged_with_a_reason(path):
    assert len(REAL) >= 10
    check = domain.check_image(Image.open(path))
    assert not check.in_domain
    assert "phantoms" in check.reason and any(words in check.reason for words, _ in domain.FEATURES.values())
    text = domain.warning(check)
    assert "not one of the synthetic phantoms" in text and "medln-tiny" in text


def test_greyscale_real_image_at_phantom_size_is_still_flagged():
    """Size and colour alone do not decide: a real chest radiograph made grey and 56 px square
    (inside the size range of both styles, 48 and 64 px)."""
    image = Image.open(ASSETS / "images" / "real-chest_xray_pa.png").convert("L").resize((56, 56))
    check = domain.check_image(image)
    assert not check.in_domain and "size" not in check.reason


def test_a_merged_demo_model_is_the_demo_model(tmp_path):
    """`medln merge` writes the model it came from in medln-merged.json: merged medln-tiny still
    gets the demo model's image check, a merged real backbone does not."""
    import json

    for name, source, demo in (("tiny", "medln-tiny", True), ("qwen", "Qwen/Qwen2-VL-2B-Instruct", False),
                               ("twice", str(tmp_path / "tiny"), True)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "medln-merged.json").write_text(json.dumps({"source": source}), encoding="utf-8")
        assert domain.is_demo_backbone(str(tmp_path / name)) is demo, name
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "medln-merged.json").write_text("[1, 2]", encoding="utf-8")
    assert not domain.is_demo_backbone(str(tmp_path / "bad"))
    assert not domain.is_demo_backbone(str(tmp_path / "missing"))


def test_demo_backbone_is_recognised():
    from medln.backbones import ASSETS as MODELS

    assert domain.is_demo_backbone("medln-tiny")
    assert domain.is_demo_backbone(str(MODELS / "medln-tiny"))
    assert not domain.is_demo_backbone("Qwen/Qwen2-VL-2B-Instruct")
    assert not domain.is_demo_backbone("")
    assert domain.warning(domain.DomainCheck(True, "scanner")) == ""
    from medln.backbones import BACKBONES_BY_NAME

    assert all(name in BACKBONES_BY_NAME for name in domain.REAL_BACKBONES_HINT)  # the warning points to real ones
