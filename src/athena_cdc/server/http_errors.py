"""JSON answers for requests that aiohttp's HTTP parser refuses before routing.

A header value with a control byte (``X-Athena-Client: a\\x01b``) is not valid HTTP,
so aiohttp answers 400 on its own, in plain text, before any handler runs. The
protocol promises a JSON body for a bad client name, so the parser's errors are
answered in the same JSON form as every other error of the server.

This hooks aiohttp's ``RequestHandler.handle_error`` through a ``Server`` subclass;
it relies on aiohttp internals (``_make_server``, ``_kwargs``), which is why aiohttp
is pinned to an exact version and ``tests/protocol/test_connect.py`` covers it.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from athena_cdc.protocol.handshake import CLIENT_HEADER, INVALID_HEADER_ERROR


class _JsonErrorRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)
        if status != 400:
            return response
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
        json_response = web.Response(
            body=orjson.dumps(body), status=400, content_type="application/json"
        )
        json_response.force_close()
        return json_response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _JsonErrorRequestHandler(self, loop=self._loop, **kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """An AppRunner whose connections answer HTTP parse errors in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server
