"""The peer of `medln ask --adapter RUN`: a minimal transformers + peft script that loads the
run's base once, attaches its adapter to that one copy, and answers greedily, with nothing
MedLN adds (no registry, no checks, no model cache, no streaming).

    python bench/ask_peer.py --model FOLDER --adapter RUN/adapter --image IMG --question "..."
                             [--prompt "USER: <image>\n{question} ASSISTANT:"] [--base]

FOLDER is the run's base model (a local folder: the bundled assets/medln-tiny, or a
downloaded model); it answers with the tuned model, and with `--base` with the base first too,
from the same weights inside peft's disable_adapter(). `medln bench-ask` passes the run's own
base and prompt and times it against `medln ask`, interleaved (medln/bench/ask.py).
"""

import argparse
import sys
import time

t0 = time.perf_counter()
p = argparse.ArgumentParser()
p.add_argument("--model", required=True, help="the base model's folder")
p.add_argument("--adapter", required=True, help="the adapter folder (a run's adapter/)")
p.add_argument("--prompt", default="USER: <image>\n{question} ASSISTANT:")
p.add_argument("--image", required=True)
p.add_argument("--question", required=True)
p.add_argument("--dtype", default="float32", help="the weights' dtype, as the run was trained")
p.add_argument("--max-new-tokens", type=int, default=16)
p.add_argument("--base", action="store_true", help="answer with the base weights as well")
args = p.parse_args()

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

processor = AutoProcessor.from_pretrained(args.model)
device = "cuda" if torch.cuda.is_available() else "cpu"
model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=getattr(torch, args.dtype), device_map=device).eval()
model = PeftModel.from_pretrained(model, args.adapter).eval()  # wraps the one copy
image = Image.open(args.image).convert("RGB")
batch = processor(images=[image], text=[args.prompt.format(question=args.question)], return_tensors="pt").to(device)


def answer() -> str:
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=args.max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
    return processor.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()


if args.base:
    with model.disable_adapter():
        print("base:", answer())
print(answer())
print(f"peer: {time.perf_counter() - t0:.2f} s after the interpreter started", file=sys.stderr)
