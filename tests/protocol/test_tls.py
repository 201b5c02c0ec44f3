"""wss:// and https:// when the server is given a certificate."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import websockets
from aiohttp import ClientSession, TCPConnector

from tests.support.servers import running_server
from tests.support.tls import self_signed_certificate


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


async def test_wss_and_https_with_a_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    trust = ssl.create_default_context(cafile=str(cert))
    async with (
        running_server(store="memory", tls_cert=str(cert), tls_key=str(key)) as server,
        websockets.connect(
            f"wss://127.0.0.1:{server.port}/ws",
            additional_headers={"X-Athena-Client": "secure"},
            ssl=trust,
        ) as ws,
    ):
        assert orjson.loads(await ws.recv())["status"] == "subscribed"
        async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
            response = await http.post(
                f"https://127.0.0.1:{server.port}/events",
                json=[{"organization_id": "secure", "payload": i} for i in range(300)],
            )
            assert response.status == 201
        live = [orjson.loads(await ws.recv())["data"]["seq"] for _ in range(300)]
        assert live == list(range(1, 301))
        await ws.send('{"type":"travel","since_seq":250}')
        replay = [orjson.loads(await ws.recv()) for _ in range(51)]
        assert [m["data"]["seq"] for m in replay[:50]] == list(range(251, 301))
        assert replay[50]["status"] == "travel_complete"


def test_a_certificate_that_cannot_be_loaded_stops_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "athena_cdc",
            "serve",
            "--store",
            "memory",
            "--port",
            "0",
            "--tls-cert",
            str(bad),
            "--tls-key",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--tls-cert" in result.stderr.strip().splitlines()[-1]
