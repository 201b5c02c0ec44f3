"""``/health``, ``/ready`` (always open, for probes) and ``/metrics`` (``--protect-ops``)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from athena_cdc.auth.guard import Guard, Refused
from athena_cdc.metrics import CONTENT_TYPE, Metrics

HealthCheck = Callable[[], str | None]  # None when fine, else the reason
RoleCheck = Callable[[], str]  # a source's role: "leader", "standby", ...


class OpsEndpoints:
    def __init__(
        self,
        metrics: Metrics,
        checks: dict[str, HealthCheck],
        guard: Guard | None = None,
        roles: dict[str, RoleCheck] | None = None,
    ) -> None:
        self.metrics = metrics
        self.checks = checks
        self.roles = roles or {}
        self.guard = guard or Guard()

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def ready(self, request: web.Request) -> web.Response:
        problems = {name: reason for name, check in self.checks.items() if (reason := check())}
        body: dict[str, object] = (
            {"status": "unavailable", "reasons": problems} if problems else {"status": "ready"}
        )
        if self.roles:  # which process streams each source (one leader across nodes)
            body["sources"] = {name: role() for name, role in self.roles.items()}
        return _json(body, 503 if problems else 200)

    async def metrics_page(self, request: web.Request) -> web.Response:
        try:
            self.guard.ops(request.headers)  # open unless --protect-ops
        except Refused as refused:
            return _json(refused.body(), refused.status)
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response


def _json(body: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
