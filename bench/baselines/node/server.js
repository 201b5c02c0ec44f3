// Baseline for the athena-cdc benchmarks: the straightforward Node.js `ws` server.
//
// Same protocol subset as athena-cdc: GET /ws with X-Athena-Client -> `subscribed`;
// POST /events (one event or a JSON array) -> 201 {"events":[...]}; events are fanned out
// as {"organization_id","data":{"seq","ts_ms","payload"}}; a `travel` message replays the
// in-memory log (all of it in common.js, shared with tuned.js). Fan-out is the usual one:
// stringify each event once, then loop `ws.send()` per subscriber per event (no
// coalescing). Nothing is durable.
//
// Usage: node server.js --port P [--host 127.0.0.1]
"use strict";

const { serve } = require("./common");

serve("node ws baseline", {
  fanOut(ch, msg) {
    for (const ws of ch.subscribers) ws.send(msg);
  },
  send(ws, text) {
    ws.send(text);
  },
});
