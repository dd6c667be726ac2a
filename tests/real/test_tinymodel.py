"""The tiny model is byte-identical run to run, and its GGUF and HF forms are the same network."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from .tinymodel import HEADS, KV_HEADS, LAYERS, TinyModel, build_model, permute_qk
from .tinytokenizer import SPECIAL_TOKENS

pytestmark = pytest.mark.real


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_two_builds_are_byte_identical_and_match_the_cache(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    first = build_model(tmp_path / "one")
    second = build_model(tmp_path / "two")
    hashes = tree_hashes(first.gguf.parent)
    assert hashes == tree_hashes(second.gguf.parent)
    assert hashes == tree_hashes(tiny_model.gguf.parent)
    assert set(hashes) >= {
        "tiny.gguf",
        "hf/config.json",
        "hf/model.safetensors",
        "hf/tokenizer.json",
        "hf/tokenizer_config.json",
    }


def test_gguf_tensors_are_the_hf_tensors_with_qk_permuted(tiny_model: TinyModel) -> None:
    hf = load_file(str(tiny_model.hf_dir / "model.safetensors"))
    reader = gguf.GGUFReader(tiny_model.gguf)
    # GGUF dims are reversed (innermost first): read back in HF [out, in] order
    tensors = {t.name: np.asarray(t.data).reshape(tuple(reversed(t.shape))) for t in reader.tensors}
    assert np.array_equal(tensors["token_embd.weight"], hf["model.embed_tokens.weight"])
    assert np.array_equal(tensors["output.weight"], hf["lm_head.weight"])
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}.self_attn."
        q, k = hf[prefix + "q_proj.weight"], hf[prefix + "k_proj.weight"]
        assert np.array_equal(tensors[f"blk.{layer}.attn_q.weight"], permute_qk(q, HEADS))
        assert np.array_equal(tensors[f"blk.{layer}.attn_k.weight"], permute_qk(k, KV_HEADS))
        assert np.array_equal(tensors[f"blk.{layer}.attn_v.weight"], hf[prefix + "v_proj.weight"])
    assert len(tensors) == len(hf)


def test_special_and_unprintable_tokens_can_never_win(tiny_model: TinyModel) -> None:
    weights = load_file(str(tiny_model.hf_dir / "model.safetensors"))["lm_head.weight"]
    tokenizer = Tokenizer.from_file(str(tiny_model.hf_dir / "tokenizer.json"))
    zero_rows = {i for i in range(weights.shape[0]) if not weights[i].any()}
    special_ids = {tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    newline_id = tokenizer.encode("\n").ids
    assert special_ids <= zero_rows
    assert set(newline_id) <= zero_rows
    for token_id in set(range(weights.shape[0])) - zero_rows:
        text = tokenizer.decode([token_id])
        assert text.isascii() and text.isprintable(), (token_id, text)


def test_hf_folder_names_the_chat_template_and_special_tokens(tiny_model: TinyModel) -> None:
    config = json.loads((tiny_model.hf_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in config["chat_template"]
    assert config["eos_token"] == "<|im_end|>"
    model_config = json.loads((tiny_model.hf_dir / "config.json").read_text())
    assert model_config["head_dim"] == 64
    assert model_config["num_key_value_heads"] == 2
