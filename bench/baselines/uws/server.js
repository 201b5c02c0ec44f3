// Baseline for the athena-cdc benchmarks: uWebSockets.js (C++), fanning out with its own
// pub/sub. It is the strongest single-process WebSocket server we could run here.
//
// Same protocol subset as athena-cdc and the Node `ws` baseline: GET /ws with
// X-Athena-Client -> `subscribed`; POST /events (one event or a JSON array) -> 201
// {"events":[...]}; events go out as {"organization_id","data":{"seq","ts_ms","payload"}};
// a `travel` message replays the in-memory log. Fan-out is uWS's own: each client is
// subscribed to the topic named after its channel and every event is `app.publish`ed once
// (uWS frames it once and queues it per subscriber; its topic tree drains at the end of
// the loop iteration, so several events of one tick leave in one write per subscriber, as
// in athena-cdc). Nothing is durable, and there is no slow-consumer policy beyond uWS's
// `maxBackpressure` (set high so that nothing is dropped).
//
// The npm package `uwebsockets` republishes the uWebSockets.js binaries (v20.x, see
// node_modules/uwebsockets/source_commit); it installs no script of its own.
//
// Usage: node server.js --port P [--host 127.0.0.1]
"use strict";

const uWS = require("uwebsockets");

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const port = Number(arg("--port", "4054"));
const host = arg("--host", "127.0.0.1");
const MAX_BODY = 10 * 1024 * 1024;

const channels = new Map(); // channel -> {seq, lastTs, log:[{seq,msg}]}

function channel(name) {
  let ch = channels.get(name);
  if (!ch) {
    ch = { seq: 0, lastTs: 0, log: [] };
    channels.set(name, ch);
  }
  return ch;
}

function json(res, status, body) {
  res.cork(() => {
    res.writeStatus(status).writeHeader("Content-Type", "application/json").end(JSON.stringify(body));
  });
}

function publish(res, text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    return json(res, "400 Bad Request", { error: "invalid_json", message: String(e) });
  }
  const items = Array.isArray(body) ? body : [body];
  for (const it of items) {
    if (!it || typeof it.organization_id !== "string" || !("payload" in it)) {
      return json(res, "400 Bad Request", { error: "invalid_event", message: "organization_id and payload required" });
    }
  }
  const acks = [];
  for (const it of items) {
    const ch = channel(it.organization_id);
    const ts = Math.max(Date.now(), ch.lastTs);
    ch.lastTs = ts;
    ch.seq += 1;
    const msg = JSON.stringify({ organization_id: it.organization_id, data: { seq: ch.seq, ts_ms: ts, payload: it.payload } });
    ch.log.push({ seq: ch.seq, msg });
    if (ch.log.length > 100000) ch.log.shift();
    app.publish(it.organization_id, msg, false);
    acks.push({ organization_id: it.organization_id, seq: ch.seq, ts_ms: ts });
  }
  json(res, "201 Created", { events: acks });
}

function travel(ws, name, m) {
  const org = typeof m.organization_id === "string" ? m.organization_id : name;
  const limit = Math.min(Number.isInteger(m.limit) ? m.limit : 10000, 50000);
  const log = channels.has(org) ? channels.get(org).log : [];
  let picked;
  if (Number.isInteger(m.since_seq)) picked = log.filter((e) => e.seq > m.since_seq).slice(0, limit);
  else picked = log.slice(Math.max(0, log.length - limit));
  ws.cork(() => {
    for (const e of picked) ws.send(e.msg, false);
    ws.send(JSON.stringify({ status: "travel_complete", organization_id: m.organization_id ?? null, since_seq: m.since_seq ?? null, since_ts_ms: m.since_ts_ms ?? null, limit, count: picked.length }), false);
  });
}

const app = uWS.App();

app.ws("/ws", {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  // uWS drops what a client cannot take beyond this; high, so that no run loses events.
  maxBackpressure: 1024 * 1024 * 1024,
  idleTimeout: 0,
  upgrade: (res, req, context) => {
    const name = (req.getHeader("x-athena-client") || "").trim();
    if (!name) {
      return res.cork(() => {
        res.writeStatus("400 Bad Request").writeHeader("Content-Type", "application/json").end(JSON.stringify({ error: "Missing X-Athena-Client header", message: "missing", hint: "add it" }));
      });
    }
    res.upgrade({ name }, req.getHeader("sec-websocket-key"), req.getHeader("sec-websocket-protocol"), req.getHeader("sec-websocket-extensions"), context);
  },
  open: (ws) => {
    const name = ws.getUserData().name;
    channel(name);
    ws.subscribe(name);
    ws.send(JSON.stringify({ status: "subscribed", client_id: name, message: "Subscribed via X-Athena-Client header" }), false);
  },
  message: (ws, data) => {
    let m;
    try {
      m = JSON.parse(Buffer.from(data).toString());
    } catch (e) {
      return ws.send(JSON.stringify({ status: "error", error: "invalid_json", message: "not JSON" }), false);
    }
    if (m.type !== "travel") return ws.send(JSON.stringify({ status: "error", error: "unknown_type", message: "only travel" }), false);
    travel(ws, ws.getUserData().name, m);
  },
});

app.get("/health", (res) => json(res, "200 OK", { status: "ok" }));
app.get("/metrics", (res) => res.cork(() => res.writeHeader("Content-Type", "text/plain").end("athena_cdc_slow_consumer_closes_total 0\n")));
app.post("/events", (res) => {
  const chunks = [];
  let size = 0;
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  res.onData((chunk, isLast) => {
    // uWS reuses the chunk's memory after this callback: copy it.
    size += chunk.byteLength;
    if (size > MAX_BODY) {
      if (!aborted) json(res, "413 Payload Too Large", { error: "body_too_large", message: "too large" });
      aborted = true;
      return;
    }
    chunks.push(Buffer.from(chunk.slice(0)));
    if (isLast && !aborted) publish(res, Buffer.concat(chunks).toString());
  });
});
app.any("/*", (res) => json(res, "404 Not Found", { error: "not_found" }));

app.listen(host, port, (token) => {
  if (!token) {
    console.error(`uws baseline: cannot listen on ${host}:${port}`);
    process.exit(1);
  }
  console.log(`uws baseline listening on ${host}:${port}`);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
