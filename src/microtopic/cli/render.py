"""Render a generated topic as Markdown for reading in a terminal or a file.

The document never contains a control character other than line feed and tab,
whatever the topic holds, so printing it cannot move the cursor, recolour or
clear a terminal.
"""

from __future__ import annotations

from microtopic.domain import GeneratedTopic, Microtopic, drop_control_characters

OPTION_LETTERS = "ABCD"


def topic_to_markdown(topic: GeneratedTopic) -> str:
    """Return the whole topic as one Markdown document."""
    header = [f"# {topic.subject_name}: {topic.topic_name}", ""]
    details = [f"Course: {topic.course_id}", f"Language: {topic.language}"]
    if topic.audience:
        details.append(f"Audience: {topic.audience}")
    header += [" · ".join(details), ""]
    sections = [
        microtopic_to_markdown(index, item) for index, item in enumerate(topic.microtopics, start=1)
    ]
    document = "\n".join(header) + "\n" + "\n\n".join(sections) + "\n"
    # Generated text is cleaned when it is validated, but the request's fields and a
    # topic built in code are not, so the whole document is cleaned again here.
    return drop_control_characters(document)


def microtopic_to_markdown(index: int, item: Microtopic) -> str:
    """Return one microtopic lesson as a Markdown section."""
    lines = [
        f"## {index}. {item.title}",
        "",
        f"*{item.summary}* ({item.estimated_minutes} min)",
        "",
        item.explanation.strip(),
        "",
        "### Key points",
        "",
        *(f"- {point}" for point in item.key_points),
        "",
        "### Worked example",
        "",
        item.worked_example.strip(),
        "",
        "### Common misconceptions",
        "",
        *(f"- {misconception}" for misconception in item.misconceptions),
        "",
        "### Quiz",
    ]
    for number, question in enumerate(item.quiz, start=1):
        lines += ["", f"{number}. {question.question}", ""]
        lines += [f"   {OPTION_LETTERS[i]}. {option}" for i, option in enumerate(question.options)]
        answer = OPTION_LETTERS[question.answer_index]
        lines += ["", f"   Answer: {answer}. {question.explanation}"]
    return "\n".join(lines)
