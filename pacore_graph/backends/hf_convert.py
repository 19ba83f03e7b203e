"""GGUF → Hugging Face folder, once, so vLLM on a CPU can load a GGUF-only model
(the tests and ``docs/vllm.md`` use it on the embedded SmolLM2-135M)."""

from __future__ import annotations

import shutil
from pathlib import Path


def convert_gguf_to_hf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "bfloat16") -> Path:
    """Dequantizes a GGUF file into a Hugging Face folder ``out_dir`` (``dtype``: a torch
    dtype name), atomically; skipped when ``out_dir/config.json`` exists.

    Raises:
        ImportError: ``transformers``, ``torch``, ``gguf`` or ``accelerate`` is missing.
    """
    out = Path(out_dir).expanduser()
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = Path(gguf_path).expanduser().resolve()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers >= 5 keeps GGUF blocks packed by default, and a packed model refuses
    # save_pretrained: ask for plain dense weights instead.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=getattr(torch, dtype),
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    # A leftover quantization_config would make vLLM look for GGUF/quantized weights.
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
