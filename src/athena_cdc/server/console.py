"""``GET /console``: the ops console page, static files shipped in the package.

The files (``athena_cdc/console/static``: plain HTML, CSS and JavaScript modules, no
build step) are read once, when this module is imported (with the rest of the server,
before a start as root drops its privileges), and served from memory. The page
holds no data, so it is served without credentials; everything it shows comes from
the ops API (:mod:`athena_cdc.server.ops_api`) and ``/ws``, which check them.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

STATIC_PACKAGE = "athena_cdc.console"
STATIC_DIR = "static"

# The page talks only to its own server (fetch and WebSocket), runs only its own
# scripts and cannot be framed by another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# The kinds of file the page is made of (not the system's mime table, which varies).
CONTENT_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

StaticFile = tuple[bytes, str, str]  # body, content type, ETag


def load_static() -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for entry in resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR).iterdir():
        kind = CONTENT_TYPES.get("." + entry.name.rpartition(".")[2])
        if entry.is_file() and kind is not None:
            body = entry.read_bytes()
            files[entry.name] = (body, kind, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    if "index.html" not in files:
        raise RuntimeError(f"{STATIC_PACKAGE}/{STATIC_DIR}/index.html is not installed")
    return files


STATIC_FILES = load_static()


class ConsolePage:
    def __init__(self, files: dict[str, StaticFile] = STATIC_FILES) -> None:
        self.files = files

    def register(self, app: web.Application) -> None:
        app.router.add_get("/console", self.index)
        app.router.add_get("/console/", self.index)
        app.router.add_get("/console/{file}", self.asset)

    async def index(self, request: web.Request) -> web.Response:
        return self._serve(request, "index.html")

    async def asset(self, request: web.Request) -> web.Response:
        return self._serve(request, request.match_info["file"])

    def _serve(self, request: web.Request, name: str) -> web.Response:
        found = self.files.get(name)
        if found is None:
            raise web.HTTPNotFound()
        body, kind, etag = found
        headers = {**SECURITY_HEADERS, "ETag": etag}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        response = web.Response(body=body, headers=headers)
        response.content_type = kind
        if kind.startswith("text/"):
            response.charset = "utf-8"
        return response
