// Prints the upgrade request athena-cdc-client sends (path with query, and headers), as
// seen by a real HTTP server, then exits. argv[2]: JSON {client, token, credentials?}.
import http from "node:http";
import { connect } from "../../clients/js/src/index.js";

const config = JSON.parse(process.argv[2]);
const server = http.createServer();
server.on("upgrade", (request, socket) => {
  process.stdout.write(`${JSON.stringify({ url: request.url, headers: request.headers })}\n`);
  socket.destroy();
  process.exit(0);
});
server.listen(0, "127.0.0.1", () => {
  connect(`ws://127.0.0.1:${server.address().port}/ws?keep=1`, config);
});
