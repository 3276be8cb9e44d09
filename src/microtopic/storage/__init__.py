"""Storage: generation requests, their topics, LLM calls and traces, and background jobs.

`Database` owns the async engine and upgrades the schema with the Alembic
migrations in `migrations/`. `GenerationStore` writes and reads the requests,
`TraceStore` reads their traces and prunes old ones, and `JobStore` keeps the
jobs. They take and return the plain records of `records` and `job_records`,
and raise `StorageError` in place of any SQLAlchemy or driver error.
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
from microtopic.storage.passthrough import PassthroughStore
from microtopic.storage.records import (
    SUCCESS_OUTCOME,
    ForwardedCall,
    KeyUsage,
    LlmCallRecord,
    RequestKind,
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
    "ClaimedItem",
    "Database",
    "ForwardedCall",
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
    "PassthroughStore",
    "PendingItem",
    "RequestFilter",
    "RequestKind",
    "RequestStatus",
    "RequestSummary",
    "SpanRecord",
    "StepRecord",
    "StoredItem",
    "StoredJob",
    "StoredRequest",
    "StoredTrace",
    "Submission",
    "TraceStore",
    "upgrade_database",
]
