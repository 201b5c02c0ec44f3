// Drives athena-cdc-client (clients/js) under Node for tests/clients_js: one JSON line on
// stdout per thing the client emits (drive.mjs), so that the Python test can check every
// seq, gap and reset.
//
// argv[2] is a JSON config: {url, client, subscribe: [{channel, sinceSeq?, epoch?}],
// token?, tokenFromStdin?, credentials?, backoff?, heartbeatMs?, pageSize?}.
// The first line says whether Node has a global WebSocket (else the client uses `ws`).
// With tokenFromStdin, each getToken() call prints {"type":"need_token"} and waits for a
// line {"token": "..."} on stdin. A line {"cmd": "close"} closes the client, prints
// {"type":"closed","positions":{...}} and exits; {"cmd": "positions"} prints them.
import { createInterface } from "node:readline";
import { connect } from "../../clients/js/src/index.js";
import { drive } from "./drive.mjs";

const config = JSON.parse(process.argv[2]);
const print = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);
print({ type: "runtime", globalWebSocket: typeof globalThis.WebSocket === "function" });

const tokenWaiters = [];
const getToken = config.tokenFromStdin
  ? () =>
      new Promise((resolve) => {
        tokenWaiters.push(resolve);
        print({ type: "need_token" });
      })
  : undefined;
const client = drive(connect, config, print, getToken);

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.token !== undefined) {
    tokenWaiters.shift()?.(command.token);
  } else if (command.cmd === "positions") {
    print({ type: "positions", positions: client.positions(), state: client.state });
  } else if (command.cmd === "close") {
    await client.close();
    print({ type: "closed", positions: client.positions(), count: client.eventCount });
    process.exit(0);
  }
}
