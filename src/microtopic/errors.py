"""Every error Microtopic raises, in one tree.

    MicrotopicError                     base; carries a stable `code`
    ├── ConfigError                     the config file or a setting is invalid
    ├── GatewayError                    the gateway could not get a completion
    │   ├── NoKeyAvailableError         no key is active or has a free slot
    │   ├── ServiceAtCapacityError      every concurrency slot stayed taken
    │   └── AllKeysFailedError          every attempt failed; lists each key and why
    ├── UpstreamError                   one call to one provider failed
    │   ├── UpstreamAuthError           401/403: the key is revoked or wrong
    │   ├── UpstreamRateLimitError      429: the key is over its quota
    │   ├── UpstreamServerError         5xx from the provider
    │   ├── UpstreamTimeoutError        no answer within the call timeout
    │   ├── UpstreamConnectionError     connection refused or reset
    │   └── UpstreamBadRequestError     400-class: the request itself is wrong
    ├── InvalidModelOutputError         output failed validation even after a repair
    ├── StorageError                    the database refused or could not be reached
    ├── DuplicateRequestError           a request id is used a second time
    └── NotFoundError                   a request id or key name does not exist

Errors of the openai SDK are translated into `UpstreamError` in
`microtopic.providers.errors`, and SQLAlchemy's in `microtopic.storage.errors`.
Every message is a sentence a user can act on and never contains key material.
"""

from __future__ import annotations

from dataclasses import dataclass


class MicrotopicError(Exception):
    """Base of all Microtopic errors; `code` is stable and documented for clients."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(MicrotopicError):
    """Raised at start-up when the config file or a setting is invalid."""

    code = "invalid_config"


class GatewayError(MicrotopicError):
    """Raised when the gateway cannot return a completion."""

    code = "gateway_error"


class NoKeyAvailableError(GatewayError):
    """Raised when no configured key is active and has a free concurrency slot."""

    code = "no_key_available"

    def __init__(self, message: str, *, key_count: int, inactive_count: int) -> None:
        super().__init__(message)
        self.key_count = key_count
        self.inactive_count = inactive_count


class ServiceAtCapacityError(GatewayError):
    """Raised when every concurrency slot stayed taken for the whole queue timeout."""

    code = "service_at_capacity"

    def __init__(self, message: str, *, max_concurrent_requests: int, retry_after_s: float) -> None:
        super().__init__(message)
        self.max_concurrent_requests = max_concurrent_requests
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class KeyFailure:
    """One failed attempt: which key, which kind of error, and a safe description."""

    key_name: str
    error_code: str
    reason: str


class AllKeysFailedError(GatewayError):
    """Raised when every attempt the retry strategy allows has failed."""

    code = "all_keys_failed"

    def __init__(self, failures: list[KeyFailure]) -> None:
        listed = "; ".join(f"{f.key_name}: {f.reason}" for f in failures)
        super().__init__(
            f"All {len(failures)} attempts failed ({listed}). Check the keys with "
            "`microtopic keys` and the service stats, then retry the request."
        )
        self.failures = failures


class UpstreamError(MicrotopicError):
    """Raised by a provider when one call fails; the gateway decides what follows.

    `reason` is a short description written by us, safe to show to a client.
    `status_code` is the provider's HTTP status, when there was one.
    """

    code = "upstream_error"
    disables_key = False
    retryable = True

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class UpstreamAuthError(UpstreamError):
    """Raised on 401 or 403: the key is wrong or revoked, so it leaves the rotation."""

    code = "upstream_auth_failed"
    disables_key = True


class UpstreamRateLimitError(UpstreamError):
    """Raised on 429; `retry_after_s` is the provider's hint, when it sent one."""

    code = "upstream_rate_limited"

    def __init__(
        self, reason: str, *, status_code: int | None = 429, retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason, status_code=status_code)
        self.retry_after_s = retry_after_s


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
    retryable = False


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


class DuplicateRequestError(MicrotopicError):
    """Raised when a new generation reuses the id of a stored one."""

    code = "duplicate_request_id"

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class NotFoundError(MicrotopicError):
    """Raised when a request id or key name does not exist."""

    code = "not_found"
