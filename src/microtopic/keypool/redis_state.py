"""Key pool state in Redis, shared by every process that serves the same keys.

Each process keeps its own queue, slots and a mirror of every key's state, and
admits a call locally first. With shared state it then sends the call to Redis
for admission. There one Lua script checks the key's disabled, exhausted,
cooldown and circuit marks and its request and token windows, and charges the
call only if all of them allow it. A script runs atomically, so N processes
together never admit more than a key's windows allow, and a cooldown set by one
process rejects the next admission of every other. Times inside the scripts
come from Redis's own clock (`TIME`), so the processes' clocks do not need to agree.

Per key, under `{namespace}:pool:{key name}`:

- a hash: `disabled`, `exhausted`, `exhausted_until`, `cooldown_until` and
  `open_until` (milliseconds on Redis's clock; `exhausted_until` is -1 for "until
  enabled"), `tokens_used` (the sum over the token window), the counters
  `admitted`, `served`, `errors` and `error:{code}`, `last_error`, and `restored`,
  which counts the times the key was put back into rotation;
- `...:requests`, a sorted set of admitted calls scored by admission time;
- `...:tokens`, the same calls as `{call id}:{tokens}`.

A call is dated when it is admitted and again when it is sent. The second date
is the admission's on Redis's clock plus the time the process measured between
requesting the admission and sending, so a busy write queue cannot make it late
and hold the window longer than the provider does. The provider dates the call
on arrival, a little later still; the windows' `margin_s` covers that gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio

from microtopic.keypool.quota import KeyQuota
from microtopic.redis_client import redis_errors

# Shared by the scripts below: the time on Redis's clock in milliseconds, and the
# expiry of a key's token window, which keeps the running sum in step with the set.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function expire_tokens(state, tokens, window_ms)
  local used = tonumber(redis.call('HGET', state, 'tokens_used') or '0')
  local old = redis.call('ZRANGEBYSCORE', tokens, '-inf', now - window_ms)
  for _, entry in ipairs(old) do
    used = used - tonumber(string.match(entry, ':(%d+)$'))
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', tokens, '-inf', now - window_ms) end
  if used < 0 or redis.call('EXISTS', tokens) == 0 then used = 0 end
  return used
end
"""

# KEYS: state, requests, tokens.
# ARGV: call id, tokens, requests limit, requests window ms, tokens limit,
#       tokens window ms, probe ms (how long a half-open key's probe keeps others out),
#       '1' to honour the key's marks or '0' to skip them (a health check).
# Returns {verdict, now, until, reason}, times as strings: Lua numbers returned
# to Redis are cut to integers.
_ADMIT = (
    _PRELUDE
    + """
local state, requests, tokens = KEYS[1], KEYS[2], KEYS[3]
local open_until = 0
if ARGV[8] == '1' then
  local marks = redis.call('HMGET', state, 'disabled', 'exhausted', 'exhausted_until',
                           'cooldown_until', 'open_until')
  if marks[1] then return {'disabled', tostring(now), '0', marks[1]} end
  if marks[2] then
    local exhausted_until = tonumber(marks[3] or '-1')
    if exhausted_until < 0 or now < exhausted_until then
      return {'exhausted', tostring(now), tostring(exhausted_until), marks[2]}
    end
  end
  local cooldown_until = tonumber(marks[4] or '0')
  if now < cooldown_until then
    return {'cooling', tostring(now), tostring(cooldown_until), ''}
  end
  open_until = tonumber(marks[5] or '0')
  if now < open_until then return {'circuit_open', tostring(now), tostring(open_until), ''} end
end

local amount = tonumber(ARGV[2])
local requests_limit, requests_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens_limit, tokens_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local fits_at = now
if requests_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', requests, '-inf', now - requests_ms)
  local excess = redis.call('ZCARD', requests) + 1 - requests_limit
  if excess > 0 then
    local entry = redis.call('ZRANGE', requests, excess - 1, excess - 1, 'WITHSCORES')
    fits_at = math.max(fits_at, tonumber(entry[2]) + requests_ms)
  end
end
local used = 0
if tokens_limit > 0 then
  used = expire_tokens(state, tokens, tokens_ms)
  redis.call('HSET', state, 'tokens_used', used)
  local excess = used + amount - tokens_limit
  if excess > 0 then
    local entries = redis.call('ZRANGE', tokens, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      excess = excess - tonumber(string.match(entries[i], ':(%d+)$'))
      if excess <= 0 then
        fits_at = math.max(fits_at, tonumber(entries[i + 1]) + tokens_ms)
        break
      end
    end
  end
end
if fits_at > now then return {'quota', tostring(now), tostring(fits_at), ''} end

if requests_limit > 0 then
  redis.call('ZADD', requests, now, ARGV[1])
  redis.call('PEXPIRE', requests, math.ceil(requests_ms) + 1000)
end
if tokens_limit > 0 then
  redis.call('ZADD', tokens, now, ARGV[1] .. ':' .. amount)
  redis.call('PEXPIRE', tokens, math.ceil(tokens_ms) + 1000)
  redis.call('HSET', state, 'tokens_used', used + amount)
end
redis.call('HINCRBY', state, 'admitted', 1)
if open_until > 0 then
  -- Half-open: this call is the probe, and the key takes no other until it ends.
  redis.call('HSET', state, 'open_until', tostring(now + tonumber(ARGV[7])))
end
local at = string.format('%.3f', now)  -- tostring keeps only 14 digits
return {'ok', at, at, ''}
"""
)

# KEYS: state, requests, tokens. ARGV: call id, tokens.
_REFUND = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZREM', KEYS[3], ARGV[1] .. ':' .. ARGV[2]) == 1 then
  local used = tonumber(redis.call('HGET', KEYS[1], 'tokens_used') or '0') - tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'tokens_used', math.max(0, used))
end
return 1
"""

# KEYS: requests, tokens. ARGV: call id, tokens, the moment it was sent in
# milliseconds on Redis's clock, or '' for now. Dates the call from then, so that
# it leaves the windows when it leaves the provider's. A date never moves back.
_RESTAMP = (
    _PRELUDE
    + """
local sent = now
if ARGV[3] ~= '' then sent = math.min(now, tonumber(ARGV[3])) end
redis.call('ZADD', KEYS[1], 'XX', 'GT', sent, ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', 'GT', sent, ARGV[1] .. ':' .. ARGV[2])
return 1
"""
)

# KEYS: state. ARGV: field, milliseconds from now. Sets the field to that
# moment unless it already contains a later one, and returns the field's value.
_EXTEND = (
    _PRELUDE
    + """
local requested = now + tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if requested > current then
  redis.call('HSET', KEYS[1], ARGV[1], tostring(requested))
  return tostring(requested)
end
return tostring(current)
"""
)

# KEYS: state. ARGV: reason, milliseconds from now, or -1 for "until enabled".
_EXHAUST = (
    _PRELUDE
    + """
local wait_ms = tonumber(ARGV[2])
local exhausted_until = -1
if wait_ms >= 0 then exhausted_until = now + wait_ms end
redis.call('HSET', KEYS[1], 'exhausted', ARGV[1], 'exhausted_until', tostring(exhausted_until))
return tostring(exhausted_until)
"""
)

# KEYS: state, requests, tokens. ARGV: requests window ms, tokens window ms.
# Returns {now, requests used, tokens used, field, value, field, value, ...}.
_SNAPSHOT = (
    _PRELUDE
    + """
local requests_used = redis.call('ZCOUNT', KEYS[2], '(' .. (now - tonumber(ARGV[1])), '+inf')
local tokens_used = expire_tokens(KEYS[1], KEYS[3], tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'tokens_used', tokens_used)
local reply = {tostring(now), tostring(requests_used), tostring(tokens_used)}
for _, value in ipairs(redis.call('HGETALL', KEYS[1])) do table.insert(reply, value) end
return reply
"""
)

_MARKS = ("disabled", "exhausted", "exhausted_until", "cooldown_until", "open_until")


@dataclass(frozen=True)
class Admission:
    """An admission's outcome in Redis.

    `verdict` is "ok", or why the key rejected the call: "quota", "cooling", "circuit_open",
    "exhausted" or "disabled". `wait_s` is how long until that reason ends (None:
    not by itself), `reason` the provider's words for a disabled or exhausted key,
    and `at_ms` the moment of the decision on Redis's clock.
    """

    verdict: str
    wait_s: float | None
    reason: str
    at_ms: float = 0.0

    @property
    def admitted(self) -> bool:
        return self.verdict == "ok"


@dataclass(frozen=True)
class SharedKeyState:
    """One key's state in Redis, with times turned into seconds from now."""

    disabled_reason: str | None
    exhausted_reason: str | None
    exhausted_for_s: float | None  # None: until enabled
    cooldown_for_s: float
    circuit_open_for_s: float | None  # None: closed
    requests_used: int
    tokens_used: int
    admitted: int
    served: int
    errors: int
    errors_by_class: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    restored: int = 0


class RedisPoolState:
    """The Redis side of a pool's keys; every method is one round trip."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        namespace: str,
        *,
        probe_s: float,
        name: str = "Redis",
    ) -> None:
        self.name = name
        self._client = client
        self._namespace = namespace
        self._probe_ms = probe_s * 1000
        self._admit = client.register_script(_ADMIT)
        self._refund = client.register_script(_REFUND)
        self._restamp = client.register_script(_RESTAMP)
        self._extend = client.register_script(_EXTEND)
        self._exhaust = client.register_script(_EXHAUST)
        self._snapshot = client.register_script(_SNAPSHOT)

    async def admit(
        self, name: str, quota: KeyQuota, call_id: str, tokens: int, *, check_marks: bool = True
    ) -> Admission:
        """Charge a call of `tokens` to key `name` if its shared marks and windows allow it.

        A health check passes `check_marks=False`: it must reach a disabled,
        exhausted or open-circuited key to bring it back, but within its windows.
        """
        requests, token_window = quota.requests, quota.tokens
        args: list[str | int | float] = [
            call_id,
            tokens,
            0 if requests is None else requests.limit,
            0 if requests is None else requests.length_s * 1000,
            0 if token_window is None else token_window.limit,
            0 if token_window is None else token_window.length_s * 1000,
            self._probe_ms,
            "1" if check_marks else "0",
        ]
        with redis_errors(self.name, f"admit a call to key {name}"):
            verdict, now_ms, until_ms, reason = await self._admit(self._keys(name), args)
        verdict = _text(verdict)
        wait_s = _seconds_between(float(now_ms), float(until_ms))
        return Admission(verdict, wait_s, _text(reason), float(now_ms))

    async def refund(self, name: str, call_id: str, tokens: int) -> None:
        """Take back the charge of a call that was admitted but never sent."""
        with redis_errors(self.name, f"refund a call to key {name}"):
            await self._refund(self._keys(name), [call_id, tokens])

    async def restamp(
        self, name: str, call_id: str, tokens: int, sent_at_ms: float | None = None
    ) -> None:
        """Date an admitted call from when it was sent: `sent_at_ms` on Redis's clock, or now."""
        sent = "" if sent_at_ms is None else repr(sent_at_ms)
        with redis_errors(self.name, f"date a call to key {name}"):
            await self._restamp(self._keys(name)[1:], [call_id, tokens, sent])

    async def cool_down(self, name: str, wait_s: float) -> None:
        """Keep every process off key `name` for `wait_s`, unless a later cooldown is set."""
        with redis_errors(self.name, f"set the cooldown of key {name}"):
            await self._extend([self._state(name)], ["cooldown_until", wait_s * 1000])

    async def open_circuit(self, name: str, reset_s: float) -> None:
        with redis_errors(self.name, f"open the circuit of key {name}"):
            await self._extend([self._state(name)], ["open_until", reset_s * 1000])

    async def exhaust(self, name: str, reason: str, wait_s: float | None) -> None:
        """Mark key `name` out of quota for `wait_s`, or until enabled when None."""
        wait_ms = -1 if wait_s is None else wait_s * 1000
        with redis_errors(self.name, f"mark key {name} exhausted"):
            await self._exhaust([self._state(name)], [reason, wait_ms])

    async def disable(self, name: str, reason: str) -> None:
        with redis_errors(self.name, f"disable key {name}"):
            await self._client.hset(self._state(name), "disabled", reason)  # type: ignore[misc]

    async def restore(self, name: str) -> None:
        """Clear every mark that keeps key `name` out, in every process."""
        state = self._state(name)
        with redis_errors(self.name, f"enable key {name}"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(state, *_MARKS)
                pipe.hincrby(state, "restored", 1)
                await pipe.execute()

    async def record_success(self, name: str, *, closes_circuit: bool) -> None:
        state = self._state(name)
        with redis_errors(self.name, f"count a success of key {name}"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hincrby(state, "served", 1)
                if closes_circuit:
                    pipe.hdel(state, "open_until")
                await pipe.execute()

    async def record_error(self, name: str, code: str, reason: str) -> None:
        state = self._state(name)
        with redis_errors(self.name, f"count an error of key {name}"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hincrby(state, "errors", 1)
                pipe.hincrby(state, f"error:{code}", 1)
                pipe.hset(state, "last_error", reason)
                await pipe.execute()

    async def snapshot(self, name: str, quota: KeyQuota) -> SharedKeyState:
        """Return key `name`'s shared marks, window use and counters."""
        requests_ms = 0.0 if quota.requests is None else quota.requests.length_s * 1000
        tokens_ms = 0.0 if quota.tokens is None else quota.tokens.length_s * 1000
        with redis_errors(self.name, f"read the state of key {name}"):
            reply = await self._snapshot(self._keys(name), [requests_ms, tokens_ms])
        now_ms, requests_used, tokens_used, *pairs = (_text(item) for item in reply)
        fields = dict(zip(pairs[::2], pairs[1::2], strict=True))
        return _shared_state(float(now_ms), int(requests_used), int(tokens_used), fields)

    def _state(self, name: str) -> str:
        return f"{self._namespace}:pool:{name}"

    def _keys(self, name: str) -> list[str]:
        state = self._state(name)
        return [state, f"{state}:requests", f"{state}:tokens"]


def _shared_state(
    now_ms: float, requests_used: int, tokens_used: int, fields: dict[str, str]
) -> SharedKeyState:
    def wait_until(name: str) -> float | None:
        value = fields.get(name)
        return None if value is None else _seconds_between(now_ms, float(value))

    exhausted_for_s = wait_until("exhausted_until") if "exhausted" in fields else 0.0
    open_for_s = wait_until("open_until")
    return SharedKeyState(
        disabled_reason=fields.get("disabled"),
        exhausted_reason=fields.get("exhausted"),
        exhausted_for_s=exhausted_for_s,
        cooldown_for_s=wait_until("cooldown_until") or 0.0,
        circuit_open_for_s=open_for_s,
        requests_used=requests_used,
        tokens_used=tokens_used,
        admitted=int(fields.get("admitted", 0)),
        served=int(fields.get("served", 0)),
        errors=int(fields.get("errors", 0)),
        errors_by_class={
            name.removeprefix("error:"): int(value)
            for name, value in fields.items()
            if name.startswith("error:")
        },
        last_error=fields.get("last_error"),
        restored=int(fields.get("restored", 0)),
    )


def _seconds_between(now_ms: float, until_ms: float) -> float | None:
    """Seconds from `now_ms` to `until_ms` on Redis's clock; None for "never" (-1)."""
    if until_ms < 0:
        return None
    return max(0.0, (until_ms - now_ms) / 1000)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
