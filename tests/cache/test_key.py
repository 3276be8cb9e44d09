"""The cache key: which request fields, prompt versions and models change it, and which do not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from microtopic.cache.key import cache_key, model_fingerprint
from microtopic.config import KeyConfig, LocalModelConfig, ProviderKind, StructuredOutput
from microtopic.domain import Depth, GenerationRequest

MODELS = ["azure:gpt-4o-mini:json_schema"]
BASE_FIELDS: dict[str, Any] = {
    "course_id": "math-101",
    "subject_name": "Mathematics",
    "topic_name": "Linear equations",
    "microtopics": ["Slope", "Intercept"],
    "audience": "grade 9",
}


def key_of(prompt_version: str = "planner@1", models: list[str] = MODELS, **fields: Any) -> str:
    request = GenerationRequest(**{**BASE_FIELDS, **fields})
    return cache_key(request, prompt_version=prompt_version, models=models)


def azure_key(name: str, deployment: str = "gpt-4o-mini", **fields: Any) -> KeyConfig:
    return KeyConfig(
        name=name,
        provider=ProviderKind.AZURE,
        endpoint=f"https://{name}.example.test",
        deployment=deployment,
        api_version="2024-10-21",
        secret=f"secret-of-{name}",
        **fields,
    )


def test_key_is_sha256_hex() -> None:
    key = key_of()

    assert len(key) == 64
    assert int(key, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"course_id": "math-102"}, id="course_id"),
        pytest.param({"course_id": "MATH-101"}, id="course_id-case"),
        pytest.param({"subject_name": "Physics"}, id="subject_name"),
        pytest.param({"topic_name": "Quadratic equations"}, id="topic_name"),
        pytest.param({"microtopics": ["Slope"]}, id="microtopics-fewer"),
        pytest.param({"microtopics": ["Intercept", "Slope"]}, id="microtopics-order"),
        pytest.param({"microtopics": ["slope", "Intercept"]}, id="microtopics-case"),
        pytest.param({"microtopics": None}, id="microtopics-absent"),
        pytest.param({"audience": "grade 10"}, id="audience"),
        pytest.param({"audience": None}, id="audience-absent"),
        pytest.param({"language": "de"}, id="language"),
        pytest.param({"depth": Depth.FULL}, id="depth"),
    ],
)
def test_field_that_changes_output_changes_key(change: dict[str, Any]) -> None:
    assert key_of(**change) != key_of()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"is_retry": True}, id="is_retry"),
        pytest.param({"course_id": "  math-101 "}, id="course_id-outer-spaces"),
        pytest.param({"subject_name": "MATHEMATICS"}, id="subject_name-case"),
        pytest.param({"topic_name": "linear   Equations"}, id="topic_name-case-and-spaces"),
        pytest.param({"topic_name": "Linear\u3000equations"}, id="topic_name-ideographic-space"),
        pytest.param({"audience": "Grade 9"}, id="audience-case"),
        pytest.param({"microtopics": [" Slope", "Intercept  "]}, id="microtopics-outer-spaces"),
        pytest.param({"depth": Depth.LITE}, id="depth-default-given"),
    ],
)
def test_equivalent_request_keeps_key(change: dict[str, Any]) -> None:
    assert key_of(**change) == key_of()


def test_composed_and_decomposed_topic_share_key() -> None:
    composed = key_of(topic_name="Caf\u00e9 arithmetic")
    decomposed = key_of(topic_name="Cafe\u0301 arithmetic")

    assert composed == decomposed


def test_language_region_case_keeps_key() -> None:
    assert key_of(language="en-US") == key_of(language="en-us")


def test_prompt_version_changes_key() -> None:
    assert key_of(prompt_version="planner@2") != key_of(prompt_version="planner@1")


def test_models_change_key() -> None:
    assert key_of(models=["azure:gpt-4o:json_schema"]) != key_of()


def test_fingerprint_names_models_and_modes() -> None:
    keys = [
        azure_key("east"),
        azure_key("west", structured_output=StructuredOutput.JSON_OBJECT),
        azure_key("north", deployment="gpt-4o"),
    ]

    fingerprint = model_fingerprint(keys, LocalModelConfig())

    assert fingerprint == [
        "azure:gpt-4o-mini:json_object",
        "azure:gpt-4o-mini:json_schema",
        "azure:gpt-4o:json_schema",
    ]


def test_fingerprint_ignores_names_endpoints_quotas_and_order() -> None:
    first = [azure_key("east"), azure_key("west", deployment="gpt-4o")]
    second = [
        azure_key("west-2", deployment="gpt-4o", priority=2),
        azure_key("other", requests_per_minute=60, tokens_per_minute=1000),
    ]

    assert model_fingerprint(first, LocalModelConfig()) == model_fingerprint(
        second, LocalModelConfig()
    )


def test_fingerprint_never_holds_secret() -> None:
    keys = [azure_key("east")]

    fingerprint = model_fingerprint(keys, LocalModelConfig())

    assert not any("secret-of-east" in part for part in fingerprint)


def test_fingerprint_of_local_model_has_file_and_seed(tmp_path: Path) -> None:
    local = [KeyConfig(name="local", provider=ProviderKind.LOCAL)]

    default = model_fingerprint(local, LocalModelConfig())
    other_seed = model_fingerprint(local, LocalModelConfig(seed=8))
    other_file = model_fingerprint(local, LocalModelConfig(model_path=tmp_path / "other.gguf"))

    assert default == ["local:smollm2-135m-instruct:json_schema:default:seed=7"]
    assert other_seed != default
    assert other_file == ["local:smollm2-135m-instruct:json_schema:other.gguf:seed=7"]
