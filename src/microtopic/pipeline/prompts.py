"""Prompt templates: versioned files under `prompts/`, rendered with escaped user text.

A template file has a front matter with its `name` and `version`, then a
`## system` and a `## user` section. Placeholders are written `{{name}}`. User
text goes inside delimiter tags such as `<topic>` and stays as written, except
that a tag with one of the delimiters' names (`</topic>`, `<REQUEST>`) has its
`<` replaced by a full-width `＜`. So the text cannot close the block that
delimits it or open another one and read as instructions, while `&`, quotes and
other markup reach the model, and come back, unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from microtopic.providers.base import ChatMessage

TEMPLATE_NAMES = ("planner", "writer", "quiz", "repair")

# Every tag that delimits user or model text in the templates and in the pipeline's blocks.
DELIMITER_TAGS = ("request", "subject", "topic", "language", "audience", "microtopic", "lesson")

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_SECTION = re.compile(r"^## (system|user)\s*$", re.MULTILINE)
# `<` that starts an opening or closing delimiter tag, in any case and with any spaces.
# The tag name must end there, so `<topics>` or `<b>` is left alone.
_DELIMITER_TAG_START = re.compile(
    r"<(?=\s*/?\s*(?:" + "|".join(DELIMITER_TAGS) + r")(?![A-Za-z0-9_\-]))", re.IGNORECASE
)
# A look-alike that no delimiter tag starts with.
_NEUTRAL_LESS_THAN = "\N{FULLWIDTH LESS-THAN SIGN}"


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt file: its name, version and the two message templates."""

    name: str
    version: int
    system: str
    user: str

    @property
    def placeholders(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.system + self.user))

    def render(self, **values: str) -> tuple[ChatMessage, ...]:
        """Return the system and user messages with every placeholder filled."""
        missing = self.placeholders - values.keys()
        if missing:
            raise KeyError(f"prompt {self.name!r} needs values for {sorted(missing)}")
        return (
            ChatMessage("system", _fill(self.system, values)),
            ChatMessage("user", _fill(self.user, values)),
        )


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def escape_user_text(text: str) -> str:
    """Escape text supplied by a user so it cannot open or close a delimiter tag.

    Only the `<` of a delimiter tag changes; everything else is kept as written.
    """
    return _DELIMITER_TAG_START.sub(_NEUTRAL_LESS_THAN, text)


class PromptLibrary:
    """The prompt templates the pipeline uses, loaded once."""

    def __init__(self, templates: dict[str, PromptTemplate]) -> None:
        self._templates = templates

    @classmethod
    def load_default(cls) -> PromptLibrary:
        """Load the templates shipped in `microtopic/pipeline/prompts/`."""
        folder = resources.files("microtopic.pipeline") / "prompts"
        templates = {
            name: parse_template((folder / f"{name}.md").read_text(encoding="utf-8"))
            for name in TEMPLATE_NAMES
        }
        return cls(templates)

    def get(self, name: str) -> PromptTemplate:
        return self._templates[name]

    @property
    def version(self) -> str:
        """The version of the whole set, such as `planner@1,quiz@1,repair@1,writer@1`."""
        return ",".join(
            f"{t.name}@{t.version}"
            for t in sorted(self._templates.values(), key=lambda template: template.name)
        )


def parse_template(text: str) -> PromptTemplate:
    """Parse a template file; raise ValueError naming what is missing."""
    if not text.startswith("---\n"):
        raise ValueError("a prompt file must start with a front matter between --- lines")
    front, _, body = text[4:].partition("\n---\n")
    fields = dict(line.split(":", 1) for line in front.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    if "name" not in fields or not fields.get("version", "").isdigit():
        raise ValueError("a prompt's front matter needs `name` and an integer `version`")

    parts = _SECTION.split(body)
    sections = dict(zip(parts[1::2], (part.strip() for part in parts[2::2]), strict=True))
    if set(sections) != {"system", "user"}:
        raise ValueError(f"prompt {fields['name']!r} needs a `## system` and a `## user` section")
    return PromptTemplate(
        name=fields["name"],
        version=int(fields["version"]),
        system=sections["system"],
        user=sections["user"],
    )
