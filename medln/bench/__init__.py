"""Speed and memory at real shapes, with random weights: `python -m medln bench`.

Each (shape, quant, batch, seq, scope) row builds the model from a config whose
hyper-parameters are the published ones, with random weights, directly on the device (no
download; 4-bit: bitsandbytes NF4 quantization of those random weights), applies the scope
with `medln.methods.apply_scope` (the selection training uses), and measures in one run:

- training: steady-state seconds per optimizer step (CUDA events after warm-up; CPU:
  perf_counter), trained tokens/s, peak GPU memory, model FLOPs utilisation (MFU);
- what trains: trainable parameters and the adapter's bytes (what a run would save);
- generation: first-token latency and decode tokens/s, greedy, before the scope is applied
  (base) and after training with the adapter on (tuned): one copy of the base weights.

A scope that cannot run (full fine-tuning of 4-bit weights, out of memory, ...) gives a row
with a "skipped" reason instead of stopping the sweep. Rows are written as they finish, so a
command stopped at its time limit keeps what it measured. docs/bench.md has the GPU recipe.


The package, by concept: shapes (published configs, toy twins), inputs (synthetic batches
per family), measure (model building, FLOPs, timed training and generation), command (the
sweep, its results files and the CLI).
"""

from .command import EXTRA_KEYS, ROW_KEYS, BenchArgs, BenchConfig, add_cli, bench_row, main, merge_results, run_bench
from .inputs import image_block, image_tokens, synthetic_batch
from ..adapters import adapter_bytes
from .measure import build_model, forward_flops, peak_tflops, quantize_4bit, training_flops
from .shapes import SHAPES, Shape, meta_param_count, shape_config, toy_config

__all__ = ["EXTRA_KEYS", "ROW_KEYS", "SHAPES", "Shape", "BenchArgs", "build_model", "image_tokens", "BenchConfig", "image_block", "adapter_bytes", "add_cli", "bench_row",
           "forward_flops", "main", "merge_results", "meta_param_count", "peak_tflops", "quantize_4bit", "run_bench",
           "shape_config", "synthetic_batch", "toy_config", "training_flops"]
