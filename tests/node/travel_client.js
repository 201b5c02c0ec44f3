// A client written only from the protocol page (docs/protocol.md):
// connect with X-Athena-Client, wait for "subscribed", then page through one channel with
// travel (since_seq = the last seq seen) until has_more is false. Prints every message it
// receives, one per line, exactly as received, then "closed <code>".
//
// usage: node travel_client.js <ws url> <client name> <channel> <page size>
"use strict";
const WebSocket = require("ws");

const [url, clientName, channel, pageSize] = process.argv.slice(2);
const ws = new WebSocket(url, { headers: { "X-Athena-Client": clientName } });
let lastSeq = 0;

function travel() {
  ws.send(
    JSON.stringify({
      type: "travel",
      organization_id: channel,
      since_seq: lastSeq,
      limit: Number(pageSize),
    }),
  );
}

ws.on("message", (data, isBinary) => {
  if (isBinary) {
    console.error("unexpected binary frame");
    process.exit(3);
  }
  const text = data.toString();
  console.log(text);
  const message = JSON.parse(text);
  if (message.status === "subscribed" && message.organization_id === undefined) {
    travel();
  } else if (message.status === "travel_complete") {
    if (message.has_more) {
      travel();
    } else {
      ws.close(1000);
    }
  } else if (message.organization_id === channel && message.data) {
    lastSeq = message.data.seq;
  }
});

ws.on("close", (code) => console.log(`closed ${code}`));
ws.on("error", (error) => {
  console.error(`error: ${error.message}`);
  process.exit(2);
});
