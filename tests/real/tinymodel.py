"""The tiny real model: a seeded random Llama network written as GGUF (llama.cpp) and as a
Hugging Face folder (vLLM) from the same arrays, cached under a hash of this source.

Output rows of special and non-printable tokens are zero, so generations are printable ASCII and
the end token is practically never sampled: tests send max_tokens and expect "length".
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import save_file

from . import tinytokenizer
from .cache import cache_root, publish
from .tinytokenizer import CHAT_TEMPLATE, ENDOFTEXT, IM_END, TinyTokenizer, train_tokenizer

SEED = 20240607
LAYERS = 2
HIDDEN = 256
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS  # 64: a head size vLLM's CPU attention supports
FFN = 512
CONTEXT = 2048
RMS_EPS = 1e-5
ROPE_THETA = 10000.0
# Standard deviations of the random weights: inner layers small (as a fresh init), the output
# projection large so logits spread ~8 and a zeroed row (logit 0) is never the likely pick.
INNER_STD = 0.05
EMBED_STD = 1.0
OUTPUT_STD = 0.5
PINNED = ("gguf", "numpy", "safetensors", "tokenizers")  # versions go into the cache key
GGUF_NAME = "tiny.gguf"
HF_DIR = "hf"


@dataclass(frozen=True, slots=True)
class TinyModel:
    gguf: Path  # the GGUF file for llama-server
    hf_dir: Path  # the Hugging Face folder for vLLM


def make_weights(vocab_size: int, printable: list[bool]) -> dict[str, np.ndarray]:
    """All weights, HF names and layout ([out, in]), drawn in one fixed order from SEED."""
    rng = np.random.default_rng(SEED)

    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    weights = {"model.embed_tokens.weight": normal(EMBED_STD, vocab_size, HIDDEN)}
    shapes = {
        "self_attn.q_proj": (HEADS * HEAD_DIM, HIDDEN),
        "self_attn.k_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
        "self_attn.v_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
        "self_attn.o_proj": (HIDDEN, HEADS * HEAD_DIM),
        "mlp.gate_proj": (FFN, HIDDEN),
        "mlp.up_proj": (FFN, HIDDEN),
        "mlp.down_proj": (HIDDEN, FFN),
    }
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}."
        weights[prefix + "input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        weights[prefix + "post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        for name, shape in shapes.items():
            weights[prefix + name + ".weight"] = normal(INNER_STD, *shape)
    weights["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    output = normal(OUTPUT_STD, vocab_size, HIDDEN)
    output[~np.array(printable)] = 0.0
    weights["lm_head.weight"] = output
    return weights


def hf_config(vocab_size: int, ids: dict[str, int]) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": ids[IM_END],
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": INNER_STD,
        "intermediate_size": FFN,
        "max_position_embeddings": CONTEXT,
        "mlp_bias": False,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "pad_token_id": ids[ENDOFTEXT],
        "rms_norm_eps": RMS_EPS,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "vocab_size": vocab_size,
    }


def tokenizer_config(tok: TinyTokenizer) -> dict[str, object]:
    added = {
        str(token_id): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token, token_id in tok.special_ids.items()
    }
    return {
        "added_tokens_decoder": added,
        "add_bos_token": False,
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "model_max_length": CONTEXT,
        "pad_token": ENDOFTEXT,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def write_hf(folder: Path, tok: TinyTokenizer, weights: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True)
    ids = tok.special_ids
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    files = {
        "config.json": hf_config(len(tok.tokens), ids),
        "generation_config.json": {"bos_token_id": ids[ENDOFTEXT], "eos_token_id": ids[IM_END]},
        "tokenizer_config.json": tokenizer_config(tok),
        "special_tokens_map.json": {"eos_token": IM_END, "pad_token": ENDOFTEXT},
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    (folder / "tokenizer.json").write_text(tok.tokenizer_json)


def permute_qk(weights: np.ndarray, heads: int) -> np.ndarray:
    """Reorder rotary halves as llama.cpp's HF converter does (HF rotates halves, GGML pairs)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensors(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF names to GGUF names, with Q/K permuted."""
    names = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    out = {
        "token_embd.weight": weights["model.embed_tokens.weight"],
        "output_norm.weight": weights["model.norm.weight"],
        "output.weight": weights["lm_head.weight"],
    }
    for layer in range(LAYERS):
        for hf_name, gguf_name in names.items():
            array = weights[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                array = permute_qk(array, HEADS)
            elif gguf_name == "attn_k":
                array = permute_qk(array, KV_HEADS)
            out[f"blk.{layer}.{gguf_name}.weight"] = array
    return out


def write_gguf(path: Path, tok: TinyTokenizer, weights: dict[str, np.ndarray]) -> None:
    ids = tok.special_ids
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("fleetlb-tiny")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(len(tok.tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex, as the HF ByteLevel pre-tokenizer
    writer.add_token_list(list(tok.tokens))
    special = set(ids.values())
    writer.add_token_types(
        [
            gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
            for i in range(len(tok.tokens))
        ]
    )
    writer.add_token_merges(list(tok.merges))
    writer.add_bos_token_id(ids[ENDOFTEXT])
    writer.add_eos_token_id(ids[IM_END])
    writer.add_eot_token_id(ids[IM_END])
    writer.add_pad_token_id(ids[ENDOFTEXT])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, array in gguf_tensors(weights).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def build_model(folder: Path) -> TinyModel:
    """Write both forms of the model into `folder` (which must not exist yet)."""
    tok = train_tokenizer(SEED)
    weights = make_weights(len(tok.tokens), tok.printable_mask())
    folder.mkdir(parents=True)
    write_gguf(folder / GGUF_NAME, tok, weights)
    write_hf(folder / HF_DIR, tok, weights)
    return TinyModel(gguf=folder / GGUF_NAME, hf_dir=folder / HF_DIR)


def source_key() -> str:
    """Hash of the makers' source and the pinned package versions: the model's cache key."""
    digest = hashlib.sha256()
    for module_file in (__file__, tinytokenizer.__file__):
        digest.update(Path(module_file).read_bytes())
    for package in PINNED:
        digest.update(f"{package}=={metadata.version(package)}\n".encode())
    return digest.hexdigest()[:16]


def ensure_model() -> TinyModel:
    """The cached model for this source; made (in well under a second) when missing."""
    final = cache_root() / "model" / source_key()
    if not (final / GGUF_NAME).is_file():
        staging = Path(tempfile.mkdtemp(prefix="model-", dir=cache_root())) / "m"
        build_model(staging)
        publish(staging, final)
        shutil.rmtree(staging.parent, ignore_errors=True)
    return TinyModel(gguf=final / GGUF_NAME, hf_dir=final / HF_DIR)
