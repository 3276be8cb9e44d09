"""Every error Microtopic raises, in one tree.

    MicrotopicError                     base; carries a stable `code`
    ├── ConfigError                     the config file or a setting is invalid
    ├── GatewayError                    the gateway could not get a completion
    │   ├── NoKeyAvailableError         no key can serve before the request's deadline
    │   ├── ServiceAtCapacityError      the wait queue is full, or no slot freed in time
    │   ├── CallExceedsQuotaError       the call is larger than any key's token window
    │   ├── DeadlineExceededError       the request's deadline passed between attempts
    │   └── AllKeysFailedError          every attempt failed; lists each key and why
    │       └── AllKeysRateLimitedError every attempt got a 429; keys return in time
    ├── UpstreamError                   one call to one provider failed
    │   ├── UpstreamAuthError           401/403: the key is revoked or wrong
    │   ├── UpstreamRateLimitError      429: the key is over its quota, or out of it
    │   ├── UpstreamServerError         5xx from the provider
    │   ├── UpstreamTimeoutError        no answer within the call timeout
    │   ├── UpstreamConnectionError     connection refused or reset
    │   ├── UpstreamBadRequestError     400-class: the request itself is wrong
    │   │   └── RequestRejectedError    400/422 to a client's forwarded body
    │   ├── ContentFilteredError        the provider's content filter refused it
    │   └── TruncatedOutputError        the reply hit max_tokens before it ended
    ├── PassthroughError                the OpenAI-compatible endpoint rejected a call
    │   ├── PassthroughDisabledError    no `gateway_api_keys` are set
    │   ├── InvalidApiKeyError          the client's token is missing or wrong
    │   └── StreamingNotSupportedError  the body sets `stream: true`
    ├── InvalidModelOutputError         output failed validation even after a repair
    ├── StorageError                    the database refused or could not be reached
    ├── RedisUnavailableError           Redis failed or could not be reached
    │   └── QueueUnavailableError       ... while it held the arq job queue
    ├── ClientDisconnectedError         the HTTP client left before its answer was ready
    ├── DuplicateRequestError           a request id is used a second time
    ├── NotFoundError                   a request id, job id or key name does not exist
    ├── CourseFileError                 a course file cannot be read or is invalid
    ├── IdempotencyKeyConflictError     an idempotency key comes back with another body
    ├── LeaseLostError                  a job item's attempt lost its claim before it finished
    │   └── ItemCancelledError          ... because the job was cancelled
    ├── ServiceUnreachableError         the command line found no service at `--server`
    └── ServiceResponseError            the service at `--server` returned an error

Errors of the openai SDK are translated into `UpstreamError` in
`microtopic.providers.errors`, SQLAlchemy's in `microtopic.storage.errors` and
redis-py's in `microtopic.redis_client`.
Every message is a sentence a user can act on and never contains key material.
"""

from __future__ import annotations

from dataclasses import dataclass


class MicrotopicError(Exception):
    """Base of all Microtopic errors; `code` is stable and documented for clients.

    `transient` is whether the same request may succeed later with nothing changed,
    because the cause passes (keys cooling down, a full queue, a database that
    restarts). A job item that fails so is tried again after a delay.
    """

    code = "internal_error"
    transient = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(MicrotopicError):
    """Raised at start-up when the config file or a setting is invalid."""

    code = "invalid_config"


class GatewayError(MicrotopicError):
    """Raised when the gateway cannot return a completion."""

    code = "gateway_error"
    transient = True


class NoKeyAvailableError(GatewayError):
    """Raised when no key can serve the call before the request's deadline.

    Every key is disabled, exhausted, open-circuited or cooling down past the
    deadline. `retry_after_s` is when the first key returns, if one will.
    """

    code = "no_key_available"

    def __init__(
        self,
        message: str,
        *,
        key_count: int,
        inactive_count: int,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.key_count = key_count
        self.inactive_count = inactive_count
        self.retry_after_s = retry_after_s


class ServiceAtCapacityError(GatewayError):
    """Raised at once when the wait queue is full, or when no slot freed before the deadline."""

    code = "service_at_capacity"

    def __init__(self, message: str, *, max_concurrent_requests: int, retry_after_s: float) -> None:
        super().__init__(message)
        self.max_concurrent_requests = max_concurrent_requests
        self.retry_after_s = retry_after_s


class CallExceedsQuotaError(GatewayError):
    """Raised when a call needs more tokens than any key's token window admits.

    No wait helps, so it is a client error: lower `max_tokens` or shorten the prompt.
    """

    code = "exceeds_key_quota"
    transient = False

    def __init__(self, message: str, *, tokens: int, largest_window: int) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.largest_window = largest_window


class DeadlineExceededError(GatewayError):
    """Raised when the request's overall deadline passes before an attempt succeeds."""

    code = "deadline_exceeded"

    def __init__(self, message: str, *, deadline_s: float) -> None:
        super().__init__(message)
        self.deadline_s = deadline_s


@dataclass(frozen=True)
class KeyFailure:
    """One failed attempt: which key, which kind of error, and a safe description."""

    key_name: str
    error_code: str
    reason: str


class AllKeysFailedError(GatewayError):
    """Raised when every attempt the retry strategy allows has failed."""

    code = "all_keys_failed"

    def __init__(self, failures: list[KeyFailure], message: str | None = None) -> None:
        listed = "; ".join(f"{f.key_name}: {f.reason}" for f in failures)
        super().__init__(
            message
            or f"All {len(failures)} attempts failed ({listed}). Check the keys with "
            "`microtopic keys` and the service stats, then retry the request."
        )
        self.failures = failures


class AllKeysRateLimitedError(AllKeysFailedError):
    """Raised when every attempt got a 429 and the keys cool down for a known time.

    The keys are healthy, so the client should come back after `retry_after_s`.
    """

    code = "all_keys_rate_limited"

    def __init__(self, failures: list[KeyFailure], *, retry_after_s: float) -> None:
        keys = ", ".join(sorted({f.key_name for f in failures}))
        super().__init__(
            failures,
            f"All {len(failures)} attempts were rate limited (429 from {keys}); the first "
            f"key returns in {retry_after_s:.1f} s. Retry after that, or add keys or quota.",
        )
        self.retry_after_s = retry_after_s


class UpstreamError(MicrotopicError):
    """Raised by a provider when one call fails; the gateway decides what follows.

    `reason` is a short description written by us, safe to show to a client.
    `status_code` is the provider's HTTP status, when there was one.
    `key_fault` is whether the failure counts against the key that served it.
    """

    code = "upstream_error"
    disables_key = False
    retryable = True
    key_fault = True

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class UpstreamAuthError(UpstreamError):
    """Raised on 401 or 403: the key is wrong or revoked, so it leaves the rotation."""

    code = "upstream_auth_failed"
    disables_key = True


class UpstreamRateLimitError(UpstreamError):
    """Raised on 429; `retry_after_s` is the provider's hint, when it sent one.

    `quota_exhausted` is set when the provider reported the quota itself used up
    (`insufficient_quota`), not a short-term rate limit.
    """

    code = "upstream_rate_limited"

    def __init__(
        self,
        reason: str,
        *,
        status_code: int | None = 429,
        retry_after_s: float | None = None,
        quota_exhausted: bool = False,
    ) -> None:
        super().__init__(reason, status_code=status_code)
        self.retry_after_s = retry_after_s
        self.quota_exhausted = quota_exhausted


class UpstreamServerError(UpstreamError):
    """Raised on a 5xx response from the provider."""

    code = "upstream_server_error"


class UpstreamTimeoutError(UpstreamError):
    """Raised when a call gets no complete response within its timeout."""

    code = "upstream_timeout"


class UpstreamConnectionError(UpstreamError):
    """Raised when the connection to the provider is refused, reset or broken."""

    code = "upstream_connection_error"


class UpstreamBadRequestError(UpstreamError):
    """Raised on a 400-class response other than 401, 403 and 429.

    The same request would fail on every key, so the gateway does not retry it.
    """

    code = "upstream_bad_request"
    transient = False
    retryable = False


class RequestRejectedError(UpstreamBadRequestError):
    """Raised when the provider rejects a body that a client sent through the passthrough.

    The body is the client's, not ours, so the failure is not held against the key.
    """

    code = "request_rejected"
    key_fault = False


class ContentFilteredError(UpstreamError):
    """Raised when the provider's content filter refused the prompt or the completion.

    It is not the key's fault and every key would refuse it too, so it is neither
    retried nor counted against the key. `categories` are the filter's categories
    that fired, such as `violence`.
    """

    code = "content_filtered"
    transient = False
    retryable = False
    key_fault = False

    def __init__(
        self, reason: str, *, status_code: int | None = None, categories: list[str] | None = None
    ) -> None:
        super().__init__(reason, status_code=status_code)
        self.categories = categories or []


class TruncatedOutputError(UpstreamError):
    """Raised when a reply stopped at `max_tokens` (`finish_reason: length`).

    A cut-off reply is never parsed. The gateway retries once with more tokens.
    """

    code = "truncated_output"
    transient = False
    retryable = False
    key_fault = False

    def __init__(self, reason: str, *, max_tokens: int) -> None:
        super().__init__(reason, status_code=200)
        self.max_tokens = max_tokens


class PassthroughError(MicrotopicError):
    """Raised when the OpenAI-compatible endpoint rejects a call before it reaches the gateway."""

    code = "passthrough_error"


class PassthroughDisabledError(PassthroughError):
    """Raised on every passthrough call while the `gateway_api_keys` setting is empty."""

    code = "passthrough_disabled"


class InvalidApiKeyError(PassthroughError):
    """Raised when a passthrough call has no token, or one that matches no gateway API key."""

    code = "invalid_api_key"


class StreamingNotSupportedError(PassthroughError):
    """Raised when a passthrough body sets `stream: true`, which is not forwarded."""

    code = "streaming_not_supported"


class InvalidModelOutputError(MicrotopicError):
    """Raised when a model's output fails validation after the repair attempt."""

    code = "invalid_model_output"

    def __init__(self, message: str, *, step: str, problems: list[str]) -> None:
        super().__init__(message)
        self.step = step
        self.problems = problems


class StorageError(MicrotopicError):
    """Raised when the database rejects a write or cannot be reached."""

    code = "storage_error"
    transient = True


class RedisUnavailableError(MicrotopicError):
    """Raised when Redis fails or cannot be reached; `backend` names it without secrets.

    The content cache and the shared key pool state catch it and go on without
    Redis, so it does not reach clients.
    """

    code = "redis_unavailable"
    transient = True

    def __init__(self, message: str, *, backend: str) -> None:
        super().__init__(message)
        self.backend = backend


class ClientDisconnectedError(MicrotopicError):
    """Raised when an HTTP client disconnects while its generation runs; the work is cancelled."""

    code = "client_disconnected"


class DuplicateRequestError(MicrotopicError):
    """Raised when a new generation reuses the id of a stored one."""

    code = "duplicate_request_id"

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class NotFoundError(MicrotopicError):
    """Raised when a request id, job id or key name does not exist."""

    code = "not_found"


# No stored id is longer than this (request and job ids have 32 characters), so a longer
# one that a client sent is shortened in messages.
QUOTED_ID_LENGTH = 64


def field_path(location: tuple[int | str, ...], *, whole: str) -> str:
    """Return a validation error's location as a path such as `keys[0].secret`.

    `whole` names the empty location, an error of the document as a whole.
    """
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or whole


def quoted_id(value: str) -> str:
    """Return `value` quoted for a message, cut to `QUOTED_ID_LENGTH` characters."""
    if len(value) <= QUOTED_ID_LENGTH:
        return repr(value)
    return f"{value[:QUOTED_ID_LENGTH]!r}... ({len(value)} characters)"


class ServiceUnreachableError(MicrotopicError):
    """Raised by the command line when no service responds at the `--server` URL in time."""

    code = "service_unreachable"

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class ServiceResponseError(MicrotopicError):
    """Raised by the command line when the service at `--server` returns an error.

    `code` is the service's own error code when its body carries one, such as
    `no_key_available`, and `unexpected_response` otherwise.
    """

    code = "unexpected_response"

    def __init__(
        self, message: str, *, url: str, status_code: int, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        if code is not None:
            self.code = code


class CourseFileError(MicrotopicError):
    """Raised when a course file cannot be read, is not YAML, or does not describe a course.

    `problems` lists each invalid field with its path, such as
    `subjects[1].topics[0].name: Field required`.
    """

    code = "invalid_course"

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class IdempotencyKeyConflictError(MicrotopicError):
    """Raised when a job is submitted with the idempotency key of a job with another body."""

    code = "idempotency_key_conflict"

    def __init__(self, message: str, *, idempotency_key: str, job_id: str) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key
        self.job_id = job_id


class LeaseLostError(MicrotopicError):
    """Raised when an attempt at a job item stores its outcome after losing its claim.

    The item was cancelled, or its lease expired and another attempt claimed it, so this
    attempt's outcome is discarded and nothing of it is written to the item.
    """

    code = "lease_lost"

    def __init__(self, message: str, *, item_id: str, attempt: int) -> None:
        super().__init__(message)
        self.item_id = item_id
        self.attempt = attempt


class ItemCancelledError(LeaseLostError):
    """Raised when an attempt at a job item stores its topic after the job was cancelled."""

    code = "cancelled"


class QueueUnavailableError(RedisUnavailableError):
    """Raised when Redis, which stores the arq job queue, cannot be reached or fails."""

    code = "queue_unavailable"
