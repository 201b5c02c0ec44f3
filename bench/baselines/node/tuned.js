// Baseline for the athena-cdc benchmarks: Node.js `ws`, tuned the way athena-cdc is.
//
// Same protocol subset and publish contract as server.js (the `node` baseline): GET /ws
// with X-Athena-Client -> `subscribed`; POST /events (one event or a JSON array) -> 201
// {"events":[...]}; events go out as {"organization_id","data":{"seq","ts_ms","payload"}};
// a `travel` message replays the in-memory log (common.js, shared with server.js).
// Nothing is durable.
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

const { WebSocket } = require("ws");
const { serve } = require("./common");

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

serve("node ws tuned baseline", {
  fanOut(ch, msg) {
    const framed = frame(msg); // once, whatever the number of subscribers
    for (const ws of ch.subscribers) enqueue(ws, framed);
  },
  // ws.send on a subscriber whose frames are still queued would overtake them.
  send(ws, text) {
    const queue = pending.get(ws);
    if (queue) {
      pending.delete(ws);
      flushOne(ws, queue);
    }
    ws.send(text);
  },
  gone(ws) {
    pending.delete(ws);
  },
});
