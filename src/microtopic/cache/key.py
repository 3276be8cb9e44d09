"""The cache key of a generation request: a SHA-256 of everything that shapes its topic.

The key covers the request's fields that change the output, the prompt set's
version and a fingerprint of the models that may serve it. `is_retry` is left
out, because it requests a fresh generation of the same topic, not another topic.

Text is normalised the way a user would expect two requests to match:

- every text field has its runs of whitespace replaced by one space;
- `subject_name`, `topic_name` and `audience` are also NFC-normalised and
  case-folded, because "Linear Equations" and "linear equations" ask for the same
  lessons. A hit returns these fields as the request wrote them (`relabel` in
  `microtopic.cache.entry`);
- `language` is case-folded, because BCP 47 tags are case-insensitive (RFC 5646,
  section 2.1.1);
- `course_id` keeps its case, because it is the client's identifier;
- microtopic names keep their case and their order, because each name becomes a
  lesson's title as written, and the lessons come in the order named.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable
from typing import Any

from microtopic.config import KeyConfig, LocalModelConfig, ProviderKind
from microtopic.domain import GenerationRequest

# Changing what goes into the key, or how, must change this, so old entries stop matching.
KEY_FORMAT_VERSION = 1


def collapse_whitespace(text: str) -> str:
    """Return `text` stripped, with each inner run of whitespace replaced by one space."""
    return " ".join(text.split())


def fold_text(text: str) -> str:
    """Return `text` whitespace-collapsed, NFC-normalised and case-folded."""
    return unicodedata.normalize("NFC", collapse_whitespace(text)).casefold()


def normalised_request(request: GenerationRequest) -> dict[str, Any]:
    """Return the fields of `request` that change its topic, normalised for the key."""
    microtopics = request.microtopics
    return {
        "course_id": collapse_whitespace(request.course_id),
        "subject_name": fold_text(request.subject_name),
        "topic_name": fold_text(request.topic_name),
        "microtopics": None
        if microtopics is None
        else [collapse_whitespace(name) for name in microtopics],
        "audience": None if request.audience is None else fold_text(request.audience),
        "language": request.language.casefold(),
        "depth": request.depth.value,
    }


def model_fingerprint(keys: Iterable[KeyConfig], local_model: LocalModelConfig) -> list[str]:
    """Return what identifies the models that may serve a request, without any secret.

    Each key gives its provider, deployment or model name and structured-output
    mode. The embedded model also gives its file name and seed, which decide its
    output. Key names, endpoints, quotas and priorities are left out, because keys
    with the same deployment name are taken to serve the same model. The list is
    sorted and without repeats, so the order of the keys does not matter.
    """
    parts = set()
    for key in keys:
        part = f"{key.provider.value}:{key.model_label}:{key.structured_output.value}"
        if key.provider is ProviderKind.LOCAL:
            model_file = local_model.model_path.name if local_model.model_path else "default"
            part = f"{part}:{model_file}:seed={local_model.seed}"
        parts.add(part)
    return sorted(parts)


def cache_key(request: GenerationRequest, *, prompt_version: str, models: list[str]) -> str:
    """Return the hex SHA-256 that identifies the topic that `request` describes."""
    document = {
        "format": KEY_FORMAT_VERSION,
        "request": normalised_request(request),
        "prompt_version": prompt_version,
        "models": models,
    }
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
