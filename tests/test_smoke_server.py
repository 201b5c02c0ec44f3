import orjson
import websockets
from aiohttp import ClientSession

from athena_cdc.server.app import AthenaServer
from tests.support.servers import http_url, ws_url


async def test_publish_reaches_subscriber(server: AthenaServer) -> None:
    async with websockets.connect(
        ws_url(server), additional_headers={"X-Athena-Client": "a"}
    ) as ws:
        assert orjson.loads(await ws.recv())["status"] == "subscribed"
        async with ClientSession() as http:
            r = await http.post(
                http_url(server, "/events"), json={"organization_id": "a", "payload": 1}
            )
            assert r.status == 201
        assert orjson.loads(await ws.recv())["data"]["seq"] == 1
