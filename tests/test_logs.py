"""medln.logs: the known harmless third-party warnings are filtered by message at their source
(and the others are not), and the CLI's diagnostics are log records on stderr, at a level
--quiet and MEDLN_LOG set."""

from __future__ import annotations

import logging
import warnings

import pytest

from conftest import run_cli
from medln import logs


def _warnings_of(action, *, filtered: bool) -> list[str]:
    """The warnings `action` emits, from a clean filter list (every warning shown every time),
    with or without MedLN's filters on top."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        if filtered:
            logs.silence_known_noise()
        action()
    return [str(w.message) for w in caught]


def test_peft_norm_warning_is_filtered_and_only_that_one(tiny_model):
    from medln.backbones import load_backbone
    from medln.methods import apply_scope, get_scope

    def apply_ln():
        bb = load_backbone(str(tiny_model("llava")), device="cpu")
        apply_scope(bb.model, bb.model.config, bb.family, get_scope("ln"), quant="none")

    # Without the filters peft warns once per norm it tunes, and about a deprecated name: the test can fail.
    unfiltered = _warnings_of(apply_ln, filtered=False)
    assert any("Unsupported layer type" in m and "LayerNorm" in m for m in unfiltered)
    assert any("is_gradient_checkpointing" in m for m in unfiltered)
    assert not any("Unsupported layer type" in m or "is_gradient_checkpointing" in m
                   for m in _warnings_of(apply_ln, filtered=True))

    def foreign_layer():  # the same warning about a layer type that is no norm still shows
        warnings.warn_explicit("Unsupported layer type '<class 'torch.nn.modules.conv.Conv2d'>' encountered, "
                               "proceed at your own risk.", UserWarning, "tuners_utils.py", 241,
                               module="peft.tuners.tuners_utils")

    assert len(_warnings_of(foreign_layer, filtered=True)) == 1


def test_bitsandbytes_kernels_record_is_dropped_and_only_that_one(caplog):
    logs.silence_known_noise()
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger="bitsandbytes.backends.cpu.ops"):
        # what bitsandbytes 0.50 logs at import on a CPU with AVX512-BF16 without `kernels`
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
                       "`pip install kernels` and the kernels >= 0.11.1", ModuleNotFoundError("No module named 'kernels'"))
        logger.warning("something else went wrong")
        # with `kernels` installed (transformers 5.25 brings it) and no Hub to check the publisher: said, plainly
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
                       "`pip install kernels` and the kernels >= 0.11.1", ValueError(
                           "Kernel repository 'kernels-community/quantization-bitsandbytes' could not verify publisher "
                           "trust status. Set trust_remote_code=True ..."))
    first, second = [r.getMessage() for r in caplog.records]
    assert first == "something else went wrong"
    assert second.startswith("bitsandbytes did not load the Hub's fused 4-bit CPU kernel") and "uses its own" in second
    assert "could not verify publisher trust status)" in second and "trust_remote_code" not in second


def test_silencing_twice_adds_nothing():
    logs.silence_known_noise()
    before = (len(warnings.filters), len(logging.getLogger("bitsandbytes.backends.cpu.ops").filters))
    logs.silence_known_noise()
    assert (len(warnings.filters), len(logging.getLogger("bitsandbytes.backends.cpu.ops").filters)) == before


@pytest.fixture
def medln_logger():
    logger = logging.getLogger("medln")
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


def test_console_levels(medln_logger, capsys, monkeypatch):
    monkeypatch.delenv("MEDLN_LOG", raising=False)
    log = logging.getLogger("medln.test")
    logs.console()
    log.info("wrote x")
    log.warning("no PNG export")
    err = capsys.readouterr().err
    assert "wrote x\n" in err and "warning: no PNG export\n" in err
    logs.console(quiet=True)
    log.info("wrote y")
    log.warning("careful")
    err = capsys.readouterr().err
    assert "wrote y" not in err and "warning: careful" in err
    monkeypatch.setenv("MEDLN_LOG", "DEBUG")
    logs.console(quiet=True)  # the variable wins
    log.debug("details")
    assert "details" in capsys.readouterr().err
    assert sum(isinstance(h, logs._Console) for h in medln_logger.handlers) == 1  # one handler, however often


def test_cli_diagnostics_go_to_the_log(medln_logger, monkeypatch):
    monkeypatch.delenv("MEDLN_LOG", raising=False)
    proc = run_cli("params", "--scope", "ln")
    assert proc.returncode == 0 and proc.stdout.startswith("ln ")
    assert proc.stderr.strip().startswith("(") and proc.stderr.strip().endswith(" s)")  # the time it took, INFO
    quiet = run_cli("params", "--scope", "ln", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == proc.stdout and quiet.stderr == ""
