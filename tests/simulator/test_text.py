"""Lesson text, length fitting and distinct labels."""

from __future__ import annotations

import random

import pytest

from microtopic.simulator.text import LessonText, clean_topic, distinct_label, fit_length


def test_clean_topic_collapses_whitespace() -> None:
    topic = clean_topic("  Linear\n   equations ")

    assert topic == "Linear equations"


def test_clean_topic_replaces_empty_hint() -> None:
    topic = clean_topic(" \n ")

    assert topic == "the topic"


def test_field_name_chooses_wording() -> None:
    text = LessonText(random.Random(0), "Fractions")

    question = text.write("question", 0)
    key_point = text.write("key_points", 2)

    assert question.endswith("?")
    assert key_point.startswith("Key point 3:")


def test_array_items_start_differently() -> None:
    text = LessonText(random.Random(0), "Fractions")

    options = [text.write("options", index) for index in range(4)]

    assert len(set(options)) == 4


def test_fit_length_prefers_sentence_end() -> None:
    text = "One two three. Four five six seven."

    fitted = fit_length(text, 0, 20)

    assert fitted == "One two three."


def test_fit_length_cuts_at_word_without_sentence() -> None:
    text = "alpha beta gamma delta"

    fitted = fit_length(text, 0, 13)

    assert fitted == "alpha beta"


def test_fit_length_pads_to_minimum() -> None:
    fitted = fit_length("abc", 6, None)

    assert fitted == "abc..."


def test_fit_length_never_ends_with_space() -> None:
    fitted = fit_length("abc   def", 4, 6)

    assert fitted == "abc."


@pytest.mark.parametrize(("min_length", "max_length"), [(0, 1), (3, 3), (1, None)])
def test_distinct_labels_are_unique(min_length: int, max_length: int | None) -> None:
    labels = [distinct_label(index, min_length, max_length) for index in range(36)]

    assert len({label for label in labels if label is not None}) == 36


def test_distinct_label_none_when_too_long() -> None:
    label = distinct_label(36, 0, 1)

    assert label is None
