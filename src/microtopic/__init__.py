"""Microtopic: generate microtopic lessons with LLMs through a pool of keys."""

__version__ = "0.1.0"
