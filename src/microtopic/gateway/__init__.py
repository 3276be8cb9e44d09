"""The gateway: every LLM call goes through it, within capacity, with retries and failover."""

from microtopic.gateway.events import CallContext, CallEvent, CallObserver
from microtopic.gateway.gateway import Gateway, GatewayResult

__all__ = ["CallContext", "CallEvent", "CallObserver", "Gateway", "GatewayResult"]
