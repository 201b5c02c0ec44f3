// Baseline for the athena-cdc benchmarks: Node.js `ws`, tuned the way athena-cdc is.
//
// Same protocol subset and publish contract as server.js (the `node` baseline): GET /ws
// with X-Athena-Client -> `subscribed`; POST /events (one event or a JSON array) -> 201
// {"events":[...]}; events go out as {"organization_id","data":{"seq","ts_ms","payload"}};
// a `travel` message replays the in-memory log. Nothing is durable.
//
// The two tricks athena-cdc's fan-out uses, so the comparison is not against a strawman:
// * each event is framed once (`WebSocket.Sender.frame`, unmasked, as a server sends):
//   every subscriber gets the same prebuilt header and payload Buffers;
// * writes are coalesced per tick: frames are queued per subscriber and flushed on
//   `setImmediate` with the socket corked, so each subscriber gets one write (one
//   writev) per tick however many events reached it.
// Frames are written to the socket beneath `ws` (`ws._socket`), bypassing its Sender;
// ws's own sends (subscribed, travel) also write synchronously, so order is kept as long
// as a subscriber's queue is flushed before ws sends to it again (see `flushOne`).
//
// Usage: node tuned.js --port P [--host 127.0.0.1]
"use strict";

const http = require("http");
const { WebSocket, WebSocketServer } = require("ws");

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const port = Number(arg("--port", "4053"));
const host = arg("--host", "127.0.0.1");

const channels = new Map(); // channel -> {seq, lastTs, subscribers:Set, log:[{seq,ts,msg}]}
let slowCloses = 0;

// Subscriber -> frames (Buffers) queued this tick; flushed once per tick.
const pending = new Map();
let flushScheduled = false;

function frame(msg) {
  return WebSocket.Sender.frame(Buffer.from(msg), {
    fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false,
  });
}

function enqueue(ws, buffers) {
  const queue = pending.get(ws);
  if (queue) for (const b of buffers) queue.push(b);
  else pending.set(ws, buffers.slice());
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

function flushOne(ws, queue) {
  const socket = ws._socket;
  if (ws.readyState !== WebSocket.OPEN || !socket) return;
  socket.cork();
  for (const b of queue) socket.write(b);
  socket.uncork();
}

function flush() {
  flushScheduled = false;
  for (const [ws, queue] of pending) flushOne(ws, queue);
  pending.clear();
}

// ws.send on a subscriber whose frames are still queued would overtake them.
function sendNow(ws, text) {
  const queue = pending.get(ws);
  if (queue) {
    pending.delete(ws);
    flushOne(ws, queue);
  }
  ws.send(text);
}

function channel(name) {
  let ch = channels.get(name);
  if (!ch) {
    ch = { seq: 0, lastTs: 0, subscribers: new Set(), log: [] };
    channels.set(name, ch);
  }
  return ch;
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/health") return json(res, 200, { status: "ok" });
  if (req.method === "GET" && req.url === "/metrics") {
    res.writeHead(200, { "Content-Type": "text/plain" });
    return res.end(`athena_cdc_slow_consumer_closes_total ${slowCloses}\n`);
  }
  if (req.method !== "POST" || req.url !== "/events") return json(res, 404, { error: "not_found" });
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString());
    } catch (e) {
      return json(res, 400, { error: "invalid_json", message: String(e) });
    }
    const items = Array.isArray(body) ? body : [body];
    for (const it of items) {
      if (!it || typeof it.organization_id !== "string" || !("payload" in it)) {
        return json(res, 400, { error: "invalid_event", message: "organization_id and payload required" });
      }
    }
    const acks = [];
    for (const it of items) {
      const ch = channel(it.organization_id);
      const ts = Math.max(Date.now(), ch.lastTs);
      ch.lastTs = ts;
      ch.seq += 1;
      const msg = JSON.stringify({ organization_id: it.organization_id, data: { seq: ch.seq, ts_ms: ts, payload: it.payload } });
      ch.log.push({ seq: ch.seq, ts, msg });
      if (ch.log.length > 100000) ch.log.shift();
      if (ch.subscribers.size) {
        const framed = frame(msg); // once, whatever the number of subscribers
        for (const ws of ch.subscribers) enqueue(ws, framed);
      }
      acks.push({ organization_id: it.organization_id, seq: ch.seq, ts_ms: ts });
    }
    json(res, 201, { events: acks });
  });
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 * 1024 });

server.on("upgrade", (req, socket, head) => {
  const name = (req.headers["x-athena-client"] || "").trim();
  if (!name || !req.url.startsWith("/ws")) {
    const body = JSON.stringify({ error: "Missing X-Athena-Client header", message: "missing", hint: "add it" });
    socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const ch = channel(name);
    ch.subscribers.add(ws);
    ws.send(JSON.stringify({ status: "subscribed", client_id: name, message: "Subscribed via X-Athena-Client header" }));
    ws.on("message", (data) => {
      let m;
      try {
        m = JSON.parse(data.toString());
      } catch (e) {
        return sendNow(ws, JSON.stringify({ status: "error", error: "invalid_json", message: "not JSON" }));
      }
      if (m.type !== "travel") return sendNow(ws, JSON.stringify({ status: "error", error: "unknown_type", message: "only travel" }));
      const org = typeof m.organization_id === "string" ? m.organization_id : name;
      const limit = Math.min(Number.isInteger(m.limit) ? m.limit : 10000, 50000);
      const log = channels.has(org) ? channels.get(org).log : [];
      let picked;
      if (Number.isInteger(m.since_seq)) picked = log.filter((e) => e.seq > m.since_seq).slice(0, limit);
      else picked = log.slice(Math.max(0, log.length - limit));
      for (const e of picked) sendNow(ws, e.msg);
      sendNow(ws, JSON.stringify({ status: "travel_complete", organization_id: m.organization_id ?? null, since_seq: m.since_seq ?? null, since_ts_ms: m.since_ts_ms ?? null, limit, count: picked.length }));
    });
    ws.on("close", () => { ch.subscribers.delete(ws); pending.delete(ws); });
    ws.on("error", () => { ch.subscribers.delete(ws); pending.delete(ws); });
  });
});

server.listen({ port, host, backlog: 4096 }, () => console.log(`node ws tuned baseline listening on ${host}:${port}`));
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
