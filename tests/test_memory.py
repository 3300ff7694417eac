"""medln.memory: a batch too big for the memory is lowered before the first step and one that
never fits is refused with the reason; an out-of-memory job fails alone and frees what it held."""

from __future__ import annotations

import time
import weakref

import pytest

from medln.config import ConfigError, TrainConfig
from medln.data import load_samples

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")


@pytest.fixture(scope="module")
def llava_tunable(tiny_model, dataset):
    from medln.train import prepare

    cfg = TrainConfig(backbone=str(tiny_model("llava")), data=f"jsonl:{dataset}", batch_size=8, eval_split="",
                      ood_split="")
    return cfg, prepare(cfg, device="cpu"), load_samples(cfg.data, "train").samples


def test_a_batch_too_big_for_the_memory_is_lowered_and_one_that_never_fits_is_refused(llava_tunable, monkeypatch):
    from accelerate import Accelerator

    from medln import memory
    from medln.prompts import encode_for_training
    from medln.train import fit_memory

    cfg, tunable, samples = llava_tunable
    acc = Accelerator(cpu=True)
    monkeypatch.delenv(memory.ENV_CAP, raising=False)
    assert fit_memory(cfg, tunable, samples, acc) == (cfg, None)  # the tiny model fits this machine

    probe = memory.probe_batch(samples, lambda b: encode_for_training(tunable.backbone, b, cfg.max_length))
    est = memory.estimate(tunable.model, probe, trainable=tunable.selection.trainable, grad_checkpointing=False,
                          act_bytes=4)
    assert est.seq_len == probe["input_ids"].shape[1] and est.vision_tokens > 0
    assert est.need(8) - est.need(4) == 4 * est.per_sample > 0
    lighter = memory.estimate(tunable.model, probe, trainable=0, grad_checkpointing=True, act_bytes=4)
    assert lighter.per_sample < est.per_sample  # checkpointing keeps only layer inputs

    monkeypatch.setenv(memory.ENV_CAP, str(est.need(3) / memory.BUDGET_FRACTION / 1e9))
    planned, note = fit_memory(cfg, tunable, samples, acc)
    assert planned.batch_size <= 3 and planned.batch_size * planned.grad_accum >= cfg.batch_size
    assert acc.gradient_accumulation_steps == planned.grad_accum
    assert "lowered to micro-batches" in note and "MEDLN_JOB_MEMORY_GB" in note
    monkeypatch.setenv(memory.ENV_CAP, str(est.need(1) / 2 / 1e9))
    with pytest.raises(ConfigError, match="not enough memory to train: one sample needs .*--grad-checkpointing"):
        fit_memory(cfg, tunable, samples, acc)


def test_out_of_memory_in_a_job_fails_that_job_frees_it_and_the_worker_serves_on(tmp_path):
    import torch

    from medln.ui.jobs import JobManager

    held = {}

    def greedy(job):
        big = torch.empty(50_000_000, dtype=torch.uint8)  # what a step had allocated
        held["ref"] = weakref.ref(big)
        yield {"event": "start", "notes": []}
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def fine(job):
        yield {"event": "done", "status": "completed", "steps_done": 1}

    jobs = JobManager()
    failed = jobs.submit("s", "finetune", "t", tmp_path / "a", 1, greedy)
    while failed.active:
        time.sleep(0.02)
    assert failed.state == "failed" and "out of memory" in failed.error and "batch size" in failed.error
    assert held["ref"]() is None  # the failed job's tensors are gone before the next job
    nxt = jobs.submit("s", "finetune", "t", tmp_path / "b", 1, fine)
    while nxt.active:
        time.sleep(0.02)
    assert nxt.state == "done"
