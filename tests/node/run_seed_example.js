// Runs seed_example.js -- the Node example of the seed document, byte for byte -- against
// a test server. The example hard-codes ws://localhost:4053; a test server listens on a
// free port of 127.0.0.1, so this wrapper makes require("ws") return a WebSocket class that
// rewrites that one URL to process.env.ATHENA_CDC_WS_URL. Nothing else changes.
"use strict";
const path = require("path");
const RealWebSocket = require("ws");

const SEED_URL = "ws://localhost:4053/ws";
const target = process.env.ATHENA_CDC_WS_URL;
if (!target) {
  console.error("set ATHENA_CDC_WS_URL");
  process.exit(2);
}

class RedirectedWebSocket extends RealWebSocket {
  constructor(address, ...rest) {
    super(address === SEED_URL ? target : address, ...rest);
  }
}

require.cache[require.resolve("ws")].exports = RedirectedWebSocket;
require(path.join(__dirname, "seed_example.js"));
