"""The store of forwarded calls: a client's chat call sent through the passthrough.

A forwarded call is stored once, when it has ended, as a finished request of kind
`passthrough` with its LLM attempts and the spans of its trace, in one
transaction. So the trace route and the list of recent requests read it like a
generation. Nothing of the client's messages or of the reply is stored: only the
model it named, its `max_tokens`, how many messages it sent, and the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from microtopic.errors import DuplicateRequestError
from microtopic.storage.database import Database, uninterruptible
from microtopic.storage.errors import storage_errors
from microtopic.storage.models import ERROR_MESSAGE_LENGTH, GenerationRequestRow
from microtopic.storage.records import (
    ForwardedCall,
    LlmCallRecord,
    RequestKind,
    SpanRecord,
    StepRecord,
    milliseconds_between,
    truncate,
)
from microtopic.storage.repository import add_spans, call_rows, steps_to_json


class PassthroughStore:
    """Writes forwarded calls, and raises `StorageError` for any database error."""

    def __init__(self, database: Database) -> None:
        self._database = database

    @uninterruptible
    async def add(
        self,
        call: ForwardedCall,
        *,
        steps: list[StepRecord],
        calls: list[LlmCallRecord],
        spans: Sequence[SpanRecord] = (),
    ) -> None:
        """Insert the finished call with its attempts and spans, all or nothing.

        The trace gets one more span, `store outcome`, that times this write.
        Raises `DuplicateRequestError` when a request already has the call's id,
        and `StorageError` when the write fails; in each case nothing is written.
        """
        storing_since = datetime.now(UTC)
        row = _request_row(call, steps)

        with storage_errors(self._database.url, f"store forwarded call {call.request_id}"):
            try:
                async with self._database.session() as session, session.begin():
                    session.add(row)
                    await session.flush()
                    session.add_all(call_rows(call.request_id, calls))
                    await add_spans(session, call.request_id, spans, steps, calls, storing_since)
            except IntegrityError:
                # The request id is the only unique value here, so the conflict is a reused id.
                raise DuplicateRequestError(
                    f"The request id {call.request_id!r} is already stored, so this forwarded "
                    "call is not. Send a new X-Request-ID (or none) with each call.",
                    request_id=call.request_id,
                ) from None


def _request_row(call: ForwardedCall, steps: list[StepRecord]) -> GenerationRequestRow:
    error_message = None
    if call.error_message is not None:
        error_message = truncate(call.error_message, ERROR_MESSAGE_LENGTH)
    return GenerationRequestRow(
        id=call.request_id,
        kind=RequestKind.PASSTHROUGH,
        input={
            "model": call.requested_model,
            "max_tokens": call.max_tokens,
            "message_count": call.message_count,
        },
        status=call.status,
        error_code=call.error_code,
        error_message=error_message,
        created_at=call.created_at,
        finished_at=call.finished_at,
        duration_ms=milliseconds_between(call.created_at, call.finished_at),
        steps=steps_to_json(steps),
    )
