"""Requests that do not parse: INVALID_ARGUMENT, never UNKNOWN.

gRPC's Python server turns a request deserializer's exception into status
UNKNOWN ("Unexpected DecodeError ...") and, on a stream, ends the stream. A
peer that sends garbage deserves a clear INVALID_ARGUMENT, and on a long-lived
stream one bad message must not cost the caller its connection (issue 14).

:class:`MalformedRequests` is a server interceptor, the one place this is done
for every service: it wraps each method's request deserializer so that bytes
that do not parse, or a message larger than the service's cap, become a
:class:`Malformed` value instead of an exception. A unary call receiving one is
aborted with INVALID_ARGUMENT naming the method and the problem; a streaming
servicer receives it in its request iterator and answers in its own protocol
(an ERROR event on the scheduler stream, an error message on the agent's) and
keeps the stream open. An optional check per service runs on each parsed
unary request (the operator's ids, see master/validation.py) with the same
answer.

Per-service size caps: one gRPC server carries every service, and its
``grpc.max_receive_message_length`` is one number, the largest any service
needs (an agent's re-registration carries its tasks' descriptions). The
smaller caps of the other services are checked here on the raw bytes, before
parsing, which is a length test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import structlog

log = structlog.get_logger(__name__)

#: a check of a parsed request: the sentences naming what is wrong, or none
RequestCheck = Callable[[Any], list[str]]


@dataclass(frozen=True)
class Malformed:
    """What a servicer sees in place of a request message that was unusable."""

    method: str
    problem: str

    def __str__(self) -> str:
        return f"{self.method}: {self.problem}"


def _service(method: str) -> str:
    """``/corral.v1.Scheduler/Subscribe`` → ``corral.v1.Scheduler``."""
    return method.strip("/").split("/", 1)[0]


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # the stubs make it generic, grpc does not
    _Interceptor = grpc.aio.ServerInterceptor


class MalformedRequests(_Interceptor):
    """Unparsable or oversized requests become :class:`Malformed` values.

    ``max_bytes`` caps a request message per service name
    (``corral.v1.Operator``); services not named are capped only by the
    transport. ``checks`` maps a service to a check run on its parsed unary
    requests.
    """

    def __init__(
        self,
        max_bytes: Mapping[str, int] | None = None,
        checks: Mapping[str, RequestCheck] | None = None,
    ) -> None:
        self.max_bytes = dict(max_bytes or {})
        self.checks = dict(checks or {})

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method: str = handler_call_details.method
        service = _service(method)
        deserialize = _guard(handler.request_deserializer, method, self.max_bytes.get(service))
        # The handler is grpc's RpcMethodHandler namedtuple (the stubs do not
        # say so): _replace swaps one behaviour and keeps the rest.
        replaced: Any = handler._replace(request_deserializer=deserialize)  # type: ignore[attr-defined]
        check = self.checks.get(service)
        if handler.request_streaming:
            pass  # streaming servicers answer a Malformed message in their own protocol
        elif handler.unary_unary is not None:
            replaced = replaced._replace(unary_unary=_refuse_malformed(handler.unary_unary, check))
        elif handler.unary_stream is not None:
            replaced = replaced._replace(unary_stream=_refuse_malformed_stream(handler.unary_stream, check))
        result: grpc.RpcMethodHandler[Any, Any] = replaced
        return result


def _guard(deserialize: Callable[[bytes], Any], method: str, max_bytes: int | None) -> Callable[[bytes], Any]:
    def guarded(raw: bytes) -> Any:
        if max_bytes is not None and len(raw) > max_bytes:
            log.warning("request.too_large", method=method, size=len(raw), max_bytes=max_bytes)
            return Malformed(
                method, f"a request of {len(raw)} bytes is over this service's limit of {max_bytes}"
            )
        try:
            return deserialize(raw)
        except Exception as e:
            log.warning("request.unparsable", method=method, size=len(raw), error=str(e))
            return Malformed(method, f"the request does not parse as the method's message ({e})")

    return guarded


async def _refusal(
    request: Any, context: grpc.aio.ServicerContext[Any, Any], check: RequestCheck | None
) -> None:
    if isinstance(request, Malformed):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
    if check is not None:
        errors = check(request)
        if errors:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(errors))


def _refuse_malformed(behavior: Any, check: RequestCheck | None) -> Any:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _refusal(request, context, check)
        return await behavior(request, context)

    return unary


def _refuse_malformed_stream(behavior: Any, check: RequestCheck | None) -> Any:
    async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _refusal(request, context, check)
        result = behavior(request, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        else:
            await result

    return unary_stream
