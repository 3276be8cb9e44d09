"""The multi-agent pipeline that writes lessons: planner, writer, quiz author, reviewer."""

from microtopic.pipeline.lesson import LessonPipeline, PipelineResult
from microtopic.pipeline.prompts import PromptLibrary

__all__ = ["LessonPipeline", "PipelineResult", "PromptLibrary"]
