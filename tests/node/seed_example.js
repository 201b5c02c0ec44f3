const WebSocket = require("ws");
const ws = new WebSocket("ws://localhost:4053/ws", {
headers: { "X-Athena-Client": "athena_logging" },
});
ws.on("message", (data) => console.log(data.toString()));
