"""Storage: generation requests, their topics and LLM calls, in SQLite or PostgreSQL.

`Database` owns the async engine and upgrades the schema with the Alembic
migrations in `migrations/`. `GenerationStore` is the only reader and writer of
the tables, takes and returns the plain records of `records`, and raises
`StorageError` in place of any SQLAlchemy or driver error.
"""

from microtopic.storage.database import Database, upgrade_database
from microtopic.storage.records import (
    SUCCESS_OUTCOME,
    KeyUsage,
    LlmCallRecord,
    RequestStatus,
    StepRecord,
    StoredRequest,
)
from microtopic.storage.repository import GenerationStore

__all__ = [
    "SUCCESS_OUTCOME",
    "Database",
    "GenerationStore",
    "KeyUsage",
    "LlmCallRecord",
    "RequestStatus",
    "StepRecord",
    "StoredRequest",
    "upgrade_database",
]
