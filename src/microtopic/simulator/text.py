"""Made-up lesson text for simulated replies.

The sentences only need to look like a lesson about the requested topic: they are chosen
by the name of the field they fill (a `title` gets a heading, a `question` a question) and
always fit the field's length limits.
"""

from __future__ import annotations

import itertools
import random
import string
from collections.abc import Iterator

DEFAULT_TOPIC = "the topic"

_ASPECTS = (
    "the core idea",
    "reading the notation",
    "a first worked example",
    "common pitfalls",
    "where it is used",
    "checking an answer",
    "building intuition",
    "a closer look",
)

# Sentences by the kind of field they fill. Each contains {topic}, so the reply mentions it.
_OPENINGS: dict[str, tuple[str, ...]] = {
    "title": tuple(f"{{topic}}: {aspect}" for aspect in _ASPECTS),
    "summary": (
        "This part explains {aspect} of {topic} in a few short steps.",
        "A short overview of {topic}, focused on {aspect}.",
        "Learners see how {aspect} shapes {topic} and practise it once.",
        "The lesson connects {topic} with {aspect} through one example.",
    ),
    "question": (
        "Which statement about {topic} is correct?",
        "What is the first step when a problem involves {topic}?",
        "Why does {aspect} matter in {topic}?",
        "Which example shows {topic} used correctly?",
        "What goes wrong most often with {topic}?",
    ),
    "option": (
        "{topic} always gives the same result",
        "With {topic}, the answer depends on {aspect}",
        "{topic} only works with whole numbers",
        "Checking each step of {topic} avoids the error",
        "{topic} never needs a worked example",
        "The order of the steps in {topic} does not matter",
        "{topic} applies only to special cases",
        "Writing the notation of {topic} carefully helps",
    ),
    "example": (
        "A worked example about {topic}.",
        "Here is {topic} worked through on a small case.",
        "Example {number}: {topic} in practice.",
    ),
    "misconception": (
        "A common misconception is that {topic} works the same way in every case.",
        "Many learners think {aspect} can be skipped in {topic}, but it cannot.",
        "It is wrong to assume that {topic} needs no checking at the end.",
        "Some believe {topic} is only about memorising rules.",
    ),
    "point": (
        "Key point {number}: {topic} starts with {aspect}.",
        "Key point {number}: check every result in {topic} against the question.",
        "Key point {number}: in {topic}, pay attention to {aspect}.",
        "Key point {number}: write each step of {topic} on its own line.",
    ),
    "explanation": (
        "{topic} is easiest to learn through {aspect}.",
        "This explanation of {topic} begins with {aspect}.",
        "To understand {topic}, look first at {aspect}.",
    ),
    "text": (
        "A note about {topic}, item {number}.",
        "Some text about {topic} and {aspect}.",
    ),
}

# Sentences that lengthen a reply after its opening sentence.
_CONTINUATIONS = (
    "Each step follows from the one before it.",
    "A small example makes the idea concrete.",
    "Check the result by working backwards from the answer.",
    "The same method applies to larger problems.",
    "Notation matters here, so write every symbol clearly.",
    "Compare the answer with an estimate before moving on.",
    "Mistakes usually come from skipping a step.",
    "Practice with two or three variations builds confidence.",
)

# Sentences that continue a worked example, in order.
_EXAMPLE_STEPS = (
    "Step {number}: write down what is given about {topic}.",
    "Step {number}: choose the rule of {topic} that fits the question.",
    "Step {number}: apply it to the numbers, one operation per line.",
    "Step {number}: check the result against the question.",
)

# Words in a field name that choose the kind of sentence, tried in this order.
_FIELD_WORDS = (
    ("misconception", "misconception"),
    ("mistake", "misconception"),
    ("example", "example"),
    ("question", "question"),
    ("option", "option"),
    ("choice", "option"),
    ("title", "title"),
    ("name", "title"),
    ("heading", "title"),
    ("summary", "summary"),
    ("description", "summary"),
    ("point", "point"),
    ("takeaway", "point"),
    ("explanation", "explanation"),
    ("content", "explanation"),
    ("body", "explanation"),
)

# Kinds whose values are paragraphs, with the range of their length in characters.
_PARAGRAPH_LENGTHS = {"explanation": (400, 900), "example": (250, 600)}

_LABEL_ALPHABET = string.ascii_lowercase + string.digits


def clean_topic(topic_hint: str) -> str:
    """Return `topic_hint` on one line with its spaces collapsed, or a placeholder if empty."""
    topic = " ".join(topic_hint.split())
    return topic or DEFAULT_TOPIC


class LessonText:
    """A writer of lesson sentences about one topic, drawing its choices from `rng`.

    Successive values of one kind start with different sentences until the kind's
    sentences run out, so the items of an array differ.
    """

    def __init__(self, rng: random.Random, topic_hint: str) -> None:
        self._rng = rng
        self._topic = clean_topic(topic_hint)
        self._next_opening: dict[str, int] = {}

    def write(
        self, field: str | None, ordinal: int, *, min_length: int = 0, max_length: int | None = None
    ) -> str:
        """Write text for the field named `field`, within the length limits.

        `ordinal` is the position in an array; it numbers items such as key points.
        """
        kind = _kind_of(field)
        target_length = max(min_length, self._target_length(kind, max_length))
        if max_length is not None:
            target_length = min(target_length, max_length)

        sentences = self._sentences(kind, ordinal)
        text = next(sentences)
        while len(text) < target_length:
            text = f"{text} {next(sentences)}"
        return fit_length(text, min_length, max_length)

    def _target_length(self, kind: str, max_length: int | None) -> int:
        low, high = _PARAGRAPH_LENGTHS.get(kind, (0, 0))
        if max_length is not None:
            # Leave room to end on a whole sentence below a tight limit.
            low, high = min(low, max_length // 2), min(high, max_length * 3 // 4)
        return self._rng.randint(low, high)

    def _sentences(self, kind: str, ordinal: int) -> Iterator[str]:
        openings = _OPENINGS[kind]
        if kind not in self._next_opening:
            self._next_opening[kind] = self._rng.randrange(len(openings))
        index = self._next_opening[kind]
        self._next_opening[kind] = index + 1
        yield self._fill(openings[index % len(openings)], ordinal + 1)

        if kind == "example":
            for step, template in enumerate(itertools.cycle(_EXAMPLE_STEPS), start=1):
                yield self._fill(template, step)
        continuations = list(_CONTINUATIONS)
        self._rng.shuffle(continuations)
        yield from itertools.cycle(continuations)

    def _fill(self, template: str, number: int) -> str:
        aspect = self._rng.choice(_ASPECTS)
        return template.format(topic=self._topic, aspect=aspect, number=number)


def fit_length(text: str, min_length: int, max_length: int | None) -> str:
    """Cut `text` to `max_length` and pad it to `min_length` with dots.

    The result never starts or ends with whitespace, because pydantic strips it from
    fields declared with `strip_whitespace` before it checks their length.
    """
    text = text.strip()
    if max_length is not None and len(text) > max_length:
        text = _cut(text, min_length, max_length)
    if len(text) < min_length:
        text += "." * (min_length - len(text))
    return text


def _cut(text: str, min_length: int, max_length: int) -> str:
    """Cut `text` to `max_length`, after a whole sentence or else a whole word if one fits."""
    head = text[: max_length + 1]
    sentence_end = head.rfind(". ") + 1
    if sentence_end >= max(min_length, 1):
        return head[:sentence_end]

    head = text[:max_length]
    word_end = head.rfind(" ")
    if word_end >= max(min_length, 1):
        head = head[:word_end]
    return head.rstrip()


def distinct_label(index: int, min_length: int, max_length: int | None) -> str | None:
    """Return the `index`-th short label of lowercase letters and digits, or None if none fits.

    Labels of one length are distinct for distinct indexes, even when compared
    case-insensitively, which makes them a last resort for `uniqueItems` arrays.
    """
    width = max(min_length, 1)
    while index >= len(_LABEL_ALPHABET) ** width:
        index -= len(_LABEL_ALPHABET) ** width
        width += 1
    if max_length is not None and width > max_length:
        return None

    characters = []
    for _ in range(width):
        index, digit = divmod(index, len(_LABEL_ALPHABET))
        characters.append(_LABEL_ALPHABET[digit])
    return "".join(reversed(characters))


def _kind_of(field: str | None) -> str:
    name = (field or "").lower()
    for word, kind in _FIELD_WORDS:
        if word in name:
            return kind
    return "text"
