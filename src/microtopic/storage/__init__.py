"""Storage: generation requests, their topics, LLM calls and traces, in SQLite or PostgreSQL.

`Database` owns the async engine and upgrades the schema with the Alembic
migrations in `migrations/`. `GenerationStore` writes and reads the requests,
`TraceStore` reads their traces and prunes old ones. Both take and return the
plain records of `records`, and raise `StorageError` in place of any SQLAlchemy
or driver error.
"""

from microtopic.storage.database import Database, upgrade_database
from microtopic.storage.records import (
    SUCCESS_OUTCOME,
    KeyUsage,
    LlmCallRecord,
    RequestStatus,
    RequestSummary,
    SpanRecord,
    StepRecord,
    StoredRequest,
    StoredTrace,
)
from microtopic.storage.repository import GenerationStore
from microtopic.storage.traces import RequestFilter, TraceStore

__all__ = [
    "SUCCESS_OUTCOME",
    "Database",
    "GenerationStore",
    "KeyUsage",
    "LlmCallRecord",
    "RequestFilter",
    "RequestStatus",
    "RequestSummary",
    "SpanRecord",
    "StepRecord",
    "StoredRequest",
    "StoredTrace",
    "TraceStore",
    "upgrade_database",
]
