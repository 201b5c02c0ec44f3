// What the two Node.js baselines share: the protocol subset of athena-cdc, an in-memory
// log per channel, POST /events, the upgrade with X-Athena-Client and `travel`. They
// differ only in how an event reaches subscribers and how a message is sent, which each
// passes in:
//   fanOut(ch, msg)  -- deliver one event message (a string) to ch.subscribers
//   send(ws, text)   -- send one server message to one client, in order
//   gone(ws)         -- a client left (optional)
// Nothing is durable.
"use strict";

const http = require("http");
const { WebSocketServer } = require("ws");

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function serve(label, { fanOut, send, gone = () => {} }) {
  const port = Number(arg("--port", "4053"));
  const host = arg("--host", "127.0.0.1");
  const channels = new Map(); // channel -> {seq, lastTs, subscribers:Set, log:[{seq,ts,msg}]}

  function channel(name) {
    let ch = channels.get(name);
    if (!ch) {
      ch = { seq: 0, lastTs: 0, subscribers: new Set(), log: [] };
      channels.set(name, ch);
    }
    return ch;
  }

  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/health") return json(res, 200, { status: "ok" });
    if (req.method === "GET" && req.url === "/metrics") {
      res.writeHead(200, { "Content-Type": "text/plain" });
      return res.end("athena_cdc_slow_consumer_closes_total 0\n");
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
        if (ch.subscribers.size) fanOut(ch, msg);
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
          return send(ws, JSON.stringify({ status: "error", error: "invalid_json", message: "not JSON" }));
        }
        if (m.type !== "travel") return send(ws, JSON.stringify({ status: "error", error: "unknown_type", message: "only travel" }));
        const org = typeof m.organization_id === "string" ? m.organization_id : name;
        const limit = Math.min(Number.isInteger(m.limit) ? m.limit : 10000, 50000);
        const log = channels.has(org) ? channels.get(org).log : [];
        let picked;
        if (Number.isInteger(m.since_seq)) picked = log.filter((e) => e.seq > m.since_seq).slice(0, limit);
        else picked = log.slice(Math.max(0, log.length - limit));
        for (const e of picked) send(ws, e.msg);
        send(ws, JSON.stringify({ status: "travel_complete", organization_id: m.organization_id ?? null, since_seq: m.since_seq ?? null, since_ts_ms: m.since_ts_ms ?? null, limit, count: picked.length }));
      });
      ws.on("close", () => { ch.subscribers.delete(ws); gone(ws); });
      ws.on("error", () => { ch.subscribers.delete(ws); gone(ws); });
    });
  });

  server.listen({ port, host, backlog: 4096 }, () => console.log(`${label} listening on ${host}:${port}`));
  process.on("SIGTERM", () => process.exit(0));
  process.on("SIGINT", () => process.exit(0));
}

module.exports = { serve };
