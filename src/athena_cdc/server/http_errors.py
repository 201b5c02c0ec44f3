"""JSON answers for requests that aiohttp's HTTP parser refuses before routing.

A header value with a control byte (``X-Athena-Client: a\\x01b``) is not valid HTTP,
so aiohttp answers 400 on its own, in plain text, before any handler runs. The
protocol promises a JSON body for a bad client name, so the parser's errors are
answered in the same JSON form as every other error of the server.

The same goes for the 408 of a request that missed its header deadline (see
:mod:`athena_cdc.server.deadlines`, whose handler this one extends, through the
publish lane's of :mod:`athena_cdc.server.publish_lane`). These are the
client's mistakes, so they are logged at debug level, without a traceback.

This hooks aiohttp's ``RequestHandler.handle_error`` through a ``Server`` subclass;
it relies on aiohttp internals (``_make_server``, ``_kwargs``), which is why aiohttp
is pinned to an exact version and ``tests/protocol/test_connect.py`` covers it.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from athena_cdc.protocol.handshake import CLIENT_HEADER, INVALID_HEADER_ERROR
from athena_cdc.server.deadlines import Deadlines, timeout_body
from athena_cdc.server.publish_lane import LaneRequestHandler

log = logging.getLogger(__name__)


class _JsonErrorRequestHandler(LaneRequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status not in (400, 408):
            return super().handle_error(request, status, exc, message)
        log.debug("bad request from %s: %s", request.remote, message)
        if request.writer.output_size > 0:
            # As aiohttp does: an answer is already on its way, nothing more can follow.
            raise ConnectionError("a response was already sent on this connection")
        if status == 408:
            timeout = self._deadlines.header_timeout
            return _json_error(408, timeout_body("request headers", timeout, "--header-timeout"))
        detail = (message or "").strip().splitlines()[0] if message else "Bad request"
        if CLIENT_HEADER.lower().encode() in (message or "").lower().encode():
            body = {
                "error": INVALID_HEADER_ERROR,
                "message": f"The {CLIENT_HEADER} header is not valid HTTP: {detail}.",
                "hint": f"Send a name of printable characters, e.g. '{CLIENT_HEADER}: "
                "athena_logging'.",
            }
        else:
            body = {
                "error": "Bad request",
                "message": f"The request is not valid HTTP: {detail}.",
                "hint": "Check the request line and headers.",
            }
        return _json_error(400, orjson.dumps(body))


def _json_error(status: int, body: bytes) -> web.Response:
    response = web.Response(body=body, status=status, content_type="application/json")
    response.force_close()
    return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _JsonErrorRequestHandler(self, loop=self._loop, **kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """An AppRunner whose connections keep deadlines and answer HTTP errors in JSON."""

    def __init__(self, app: web.Application, *, deadlines: Deadlines, **kwargs: Any) -> None:
        # The kwargs reach each connection's handler through web.Server.
        super().__init__(app, deadlines=deadlines, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server
