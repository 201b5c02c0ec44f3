// Drives athena-cdc-client (clients/js) for tests/clients_js: one JSON line on stdout per
// thing the client emits, so that the Python test can check every seq, gap and reset.
//
// argv[2] is a JSON config: {url, client, subscribe: [{channel, sinceSeq?, epoch?}],
// token?, tokenFromStdin?, credentials?, backoff?, heartbeatMs?, pageSize?}.
// The first line says whether Node has a global WebSocket (else the client uses `ws`).
// With tokenFromStdin, each getToken() call prints {"type":"need_token"} and waits for a
// line {"token": "..."} on stdin. A line {"cmd": "close"} closes the client, prints
// {"type":"closed","positions":{...}} and exits; {"cmd": "positions"} prints them.
import { createInterface } from "node:readline";
import { connect } from "../../clients/js/src/index.js";

const config = JSON.parse(process.argv[2]);
const print = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);

print({ type: "runtime", globalWebSocket: typeof globalThis.WebSocket === "function" });

const tokenWaiters = [];
const options = {
  client: config.client,
  backoff: config.backoff ?? { initialMs: 50, maxMs: 500 },
};
for (const key of ["token", "credentials", "heartbeatMs", "pageSize"]) {
  if (config[key] !== undefined) options[key] = config[key];
}
if (config.tokenFromStdin) {
  options.getToken = () =>
    new Promise((resolve) => {
      tokenWaiters.push(resolve);
      print({ type: "need_token" });
    });
}

const client = connect(config.url, options);
let count = 0;
client.on("event", (event) => {
  count += 1;
  print({ type: "event", ...event });
});
for (const type of ["gap", "reset", "error"]) {
  client.on(type, (value) => print({ type, ...value }));
}
// Connections and states carry the time (ms), for measuring how long a resume takes.
for (const type of ["connect", "disconnect"]) {
  client.on(type, (value) => print({ type, ...value, atMs: Date.now() }));
}
client.on("state", (state) => print({ type: "state", state, count, atMs: Date.now() }));

for (const { channel, ...rest } of config.subscribe ?? []) {
  client.subscribe(channel, rest).then(
    () => print({ type: "subscribed", channel }),
    (error) => print({ type: "refused", channel, message: error.message }),
  );
}

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.token !== undefined) {
    tokenWaiters.shift()?.(command.token);
  } else if (command.cmd === "positions") {
    print({ type: "positions", positions: client.positions(), count, state: client.state });
  } else if (command.cmd === "close") {
    await client.close();
    print({ type: "closed", positions: client.positions(), count });
    process.exit(0);
  }
}
