"""A cached topic: the generated lessons and where they came from, stored as JSON."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from microtopic.domain import GeneratedTopic, GenerationRequest


class CachedTopic(BaseModel):
    """A generated topic as the cache keeps it.

    `request_id` is the request that generated it, and `models` and
    `prompt_version` are how, so a hit can report them.
    """

    model_config = ConfigDict(frozen=True)

    topic: GeneratedTopic
    prompt_version: str
    models: list[str]
    request_id: str
    created_at: datetime

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> CachedTopic | None:
        """Return the entry stored as `text`, or None when it no longer validates.

        An entry written before the lesson schema changed fails validation, and is
        then treated as a miss.
        """
        try:
            return cls.model_validate_json(text)
        except ValidationError:
            return None

    def relabel(self, request: GenerationRequest) -> GeneratedTopic:
        """Return the topic with the request's own course, names, audience and language.

        A hit may come from a request that wrote these fields with other case or
        spacing (see `microtopic.cache.key`), and the client gets back what it sent.
        """
        return self.topic.model_copy(
            update={
                "course_id": request.course_id,
                "subject_name": request.subject_name,
                "topic_name": request.topic_name,
                "audience": request.audience,
                "language": request.language,
            }
        )
