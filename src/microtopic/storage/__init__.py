"""Storage: generation requests, their topics and LLM calls, and background jobs.

`Database` owns the async engine and upgrades the schema with the Alembic
migrations in `migrations/`. `GenerationStore` and `JobStore` are the only readers
and writers of the tables, take and return the plain records of `records` and
`job_records`, and raise `StorageError` in place of any SQLAlchemy or driver error.
"""

from microtopic.storage.database import Database, upgrade_database
from microtopic.storage.job_records import (
    ClaimedItem,
    ItemLease,
    ItemStatus,
    JobKind,
    JobProgress,
    JobStatus,
    NewJob,
    PendingItem,
    StoredItem,
    StoredJob,
    Submission,
)
from microtopic.storage.jobs import JobStore
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
    "ClaimedItem",
    "Database",
    "GenerationStore",
    "ItemLease",
    "ItemStatus",
    "JobKind",
    "JobProgress",
    "JobStatus",
    "JobStore",
    "KeyUsage",
    "LlmCallRecord",
    "NewJob",
    "PendingItem",
    "RequestStatus",
    "StepRecord",
    "StoredItem",
    "StoredJob",
    "StoredRequest",
    "Submission",
    "upgrade_database",
]
