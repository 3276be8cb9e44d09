"""Count the tokens a chat request is charged when it arrives, as Azure OpenAI counts them.

Azure checks a request against the key's tokens-per-minute quota at admission: it
charges the prompt's tokens plus `max_tokens`, before any output exists. The key
pool (to stay under each quota) and the simulator (to enforce it) both count with
`admission_tokens`, so the two agree exactly on what a request costs.

Tokens are counted with tiktoken's `o200k_base` encoding, the one of the gpt-4o
family. The encoding's rank table ships with Microtopic in `data/` (tiktoken would
otherwise download it on first use, and Microtopic must work offline); its SHA-256
is checked when it is loaded.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import tiktoken

RANKS_FILE = "o200k_base.tiktoken.gz"
RANKS_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"

# The split pattern and special tokens that define o200k_base (published with tiktoken).
_O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
_O200K_SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}

# Chat framing, as OpenAI documents it for the gpt-4o family: each message costs
# 3 tokens besides its fields, and the reply is primed with 3 more.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


@functools.cache
def encoding() -> tiktoken.Encoding:
    """Return the o200k_base encoding, loaded once from the bundled rank table."""
    packed = resources.files("microtopic.data").joinpath(RANKS_FILE).read_bytes()
    table = gzip.decompress(packed)
    digest = hashlib.sha256(table).hexdigest()
    if digest != RANKS_SHA256:
        raise RuntimeError(
            f"The bundled token table {RANKS_FILE} is damaged (SHA-256 {digest}); "
            "reinstall Microtopic."
        )
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in table.splitlines() if line)
    }
    return tiktoken.Encoding(
        name="o200k_base",
        pat_str=_O200K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_O200K_SPECIAL_TOKENS,
    )


def count_text(text: str) -> int:
    """Return the number of tokens in `text`; special-token markers count as plain text."""
    return len(encoding().encode_ordinary(text))


def prompt_tokens(
    messages: Iterable[Mapping[str, Any]], response_format: Mapping[str, Any] | None = None
) -> int:
    """Return the prompt tokens of a chat request body's `messages` and `response_format`.

    A JSON Schema sent as `response_format` reaches the model as text, so it is
    counted as its compact JSON.
    """
    total = TOKENS_PER_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for name in ("role", "content", "name"):
            value = message.get(name)
            if isinstance(value, str):
                total += count_text(value)
            elif isinstance(value, list):  # content parts: count the text parts
                total += sum(count_text(str(part.get("text", ""))) for part in value)
    if response_format and response_format.get("type") == "json_schema":
        total += count_text(json.dumps(response_format, separators=(",", ":")))
    return total


def admission_tokens(
    messages: Iterable[Mapping[str, Any]],
    response_format: Mapping[str, Any] | None,
    max_tokens: int,
) -> int:
    """Return what a request is charged against a tokens-per-minute quota on arrival."""
    return prompt_tokens(messages, response_format) + max_tokens
