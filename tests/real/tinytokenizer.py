"""The tiny model's tokenizer: byte-level BPE trained on a corpus made from a seeded word list.

Pure and deterministic: the same seed and pinned `tokenizers` give the same vocab and merges.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # ids 0, 1, 2: the trainer adds them first
# ChatML, the template Qwen and many others ship; the test models answer any role.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Tokens in the vocabulary: 256 byte symbols + 3 specials + merges learned from the corpus.
VOCAB_SIZE = 1024
WORD_COUNT = 600  # distinct made-up words
SENTENCE_COUNT = 3000
LETTERS = "abcdefghijklmnopqrstuvwxyz"
PUNCTUATION = (".", ",", "!", "?", ";", ":")
# The lowest and highest byte a generation may contain: printable ASCII including the space.
PRINTABLE_MIN, PRINTABLE_MAX = 0x20, 0x7E


@dataclass(frozen=True, slots=True)
class TinyTokenizer:
    """The trained tokenizer as the two model writers need it."""

    tokenizer_json: str  # Hugging Face `tokenizer.json` text
    tokens: tuple[str, ...]  # byte-level token strings by id
    merges: tuple[str, ...]  # "left right" pairs, in merge order

    @property
    def special_ids(self) -> dict[str, int]:
        return {token: self.tokens.index(token) for token in SPECIAL_TOKENS}

    def printable_mask(self) -> list[bool]:
        """Per token id: no special token, and decodes to printable ASCII only."""
        decoder = _byte_decoder()
        return [
            token not in SPECIAL_TOKENS
            and all(PRINTABLE_MIN <= decoder[char] <= PRINTABLE_MAX for char in token)
            for token in self.tokens
        ]


def corpus(seed: int) -> list[str]:
    """Sentences of made-up words with a Zipf-like word frequency, from one seeded generator."""
    rng = random.Random(seed)
    words = sorted(
        {"".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 9))) for _ in range(WORD_COUNT)}
    )
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    sentences = []
    for _ in range(SENTENCE_COUNT):
        chosen = rng.choices(words, weights, k=rng.randint(4, 14))
        chosen[0] = chosen[0].capitalize()
        sentences.append(" ".join(chosen) + rng.choice(PUNCTUATION))
    return sentences


def train_tokenizer(seed: int) -> TinyTokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(seed), trainer)
    text = tokenizer.to_str()
    model: dict[str, Any] = json.loads(text)["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = tuple(sorted(vocab, key=vocab.__getitem__))
    if [vocab[token] for token in tokens] != list(range(len(tokens))):
        raise ValueError("tokenizer ids are not contiguous from 0")
    merges = tuple(" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"])
    return TinyTokenizer(tokenizer_json=text, tokens=tokens, merges=merges)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: the symbol of each byte in byte-level BPE."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            symbols.append(256 + extra)
            extra += 1
    return {chr(symbol): byte for byte, symbol in zip(printable, symbols, strict=True)}
