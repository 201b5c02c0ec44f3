// Runs seed_example.js -- the Node example of the seed document, byte for byte -- against
// a test server. The example hard-codes ws://localhost:4053; a test server listens on a
// free port of 127.0.0.1, so this wrapper makes require("ws") return a WebSocket class that
// rewrites that one URL to process.env.ATHENA_CDC_WS_URL. Nothing else changes, except that
// with ATHENA_CDC_TOKEN set (a server with auth on) it adds "Authorization: Bearer <token>"
// to the example's headers: the one line a user adds to the example to use a token.
"use strict";
const path = require("path");
const RealWebSocket = require("ws");

const SEED_URL = "ws://localhost:4053/ws";
const target = process.env.ATHENA_CDC_WS_URL;
if (!target) {
  console.error("set ATHENA_CDC_WS_URL");
  process.exit(2);
}

const token = process.env.ATHENA_CDC_TOKEN;

class RedirectedWebSocket extends RealWebSocket {
  constructor(address, protocols, options) {
    if (protocols && typeof protocols === "object" && !Array.isArray(protocols)) {
      [protocols, options] = [undefined, protocols]; // new WebSocket(url, options)
    }
    if (token) {
      const headers = { ...(options && options.headers), Authorization: `Bearer ${token}` };
      options = { ...options, headers };
    }
    super(address === SEED_URL ? target : address, protocols, options);
  }
}

require.cache[require.resolve("ws")].exports = RedirectedWebSocket;
require(path.join(__dirname, "seed_example.js"));
