// The athena-cdc client: one WebSocket at a time, resumed after every close so that the
// application sees each event of every channel it subscribed to once, in seq order.
//
// How (docs/protocol.md, "Resuming without loss"): per channel the client keeps the last
// seq it delivered and the log's epoch. On every (re)connection it subscribes each channel
// and travels from that seq, page after page while `has_more`; events arriving meanwhile
// (the travel's and live ones, which may overlap) are held by seq and delivered only when
// they continue the sequence, so a seq is never delivered twice or out of order. Ranges the
// log dropped (travel `gaps`) become `gap` events; a new epoch becomes a `reset` event and
// the channel starts over from seq 0.
//
// The server answers one connection's messages in order, one answer each, so the requests
// in flight are a FIFO queue: each answer (or error) belongs to the oldest request.

import { Backoff } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { Pacer } from "./pacer.js";
import { defaultCredentials, openSocket, webSocketClass } from "./transport.js";

export const CloseCode = Object.freeze({
  NORMAL: 1000,
  SHUTDOWN: 1001, // server draining: resume
  TOKEN_EXPIRED: 1008, // reconnect with a fresh token, resume
  EPOCH_CHANGED: 1012, // the log was recreated: the new epoch resets every channel
  SLOW_CONSUMER: 4008, // fell behind: resume from the last seq
});

const MAX_CHANNEL_LENGTH = 256;
const MAX_TRAVEL_LIMIT = 50_000;
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;
const RETRY_REQUEST_MS = 1000; // after `unavailable` (storage) or a failed refresh

/** Validate a channel (or client) name the way the server does; throw a TypeError. */
function checkName(what, name) {
  if (typeof name !== "string" || name.trim() === "" || name.length > MAX_CHANNEL_LENGTH) {
    throw new TypeError(`${what} must be a string of 1 to ${MAX_CHANNEL_LENGTH} characters`);
  }
  if (CONTROL_CHARACTERS.test(name)) {
    throw new TypeError(`${what} must not contain control characters`);
  }
}

function checkSeq(value) {
  if (value === undefined || value === null) return null;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new TypeError("sinceSeq must be an integer >= 0 (or absent: from now)");
  }
  return value;
}

/** One subscribed channel: where it stands, and what arrived ahead of that. */
class Channel {
  constructor(name, seq, epoch) {
    this.name = name;
    this.seq = seq; // last seq delivered; null = "from now", resolved by the first catch-up
    this.epoch = epoch; // the log's epoch that `seq` belongs to (null: not known yet)
    this.live = false;
    this.held = new Map(); // seq -> data, events that arrived ahead of seq + 1
    this.waiters = []; // subscribe() promises, settled when first live (or refused)
    this.everLive = false;
    // Bumped by each (re)subscription: answers to an older one's travels are stale.
    this.generation = 0;
  }
}

export class AthenaClient extends Emitter {
  #url;
  #client;
  #token;
  #getToken;
  #credentials;
  #WebSocket;
  #pageSize;
  #heartbeatMs;
  #parse;
  #backoff;
  #pacer;
  #channels = new Map();
  #conn = null; // the connection in use: {ws, hello, queue, epoch, lastHeard}
  #state = "connecting";
  #closed = false;
  #started = false;
  #closedPromise = null;
  #reconnectTimer = null;
  #refreshTimer = null;
  #heartbeatTimer = null;
  #helloTimer = null;
  #connectTimeoutMs;

  constructor(url, options = {}) {
    super();
    const parsed = new URL(url);
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new TypeError(`url must start with ws:// or wss://, not ${parsed.protocol}//`);
    }
    checkName("client", options.client);
    if (options.token !== undefined && typeof options.token !== "string") {
      throw new TypeError("token must be a string");
    }
    if (options.getToken !== undefined && typeof options.getToken !== "function") {
      throw new TypeError("getToken must be a function returning a token (or a promise of one)");
    }
    const pageSize = options.pageSize ?? 5000;
    if (!Number.isSafeInteger(pageSize) || pageSize < 1 || pageSize > MAX_TRAVEL_LIMIT) {
      throw new RangeError(`pageSize must be an integer from 1 to ${MAX_TRAVEL_LIMIT}`);
    }
    const heartbeatMs = options.heartbeatMs ?? 30_000;
    if (!(heartbeatMs >= 0)) throw new RangeError("heartbeatMs must be >= 0 (0: off)");
    const connectTimeoutMs = options.connectTimeoutMs ?? 15_000;
    if (!(connectTimeoutMs > 0)) throw new RangeError("connectTimeoutMs must be > 0");
    const credentials = options.credentials ?? defaultCredentials();
    if (credentials !== "headers" && credentials !== "query") {
      throw new TypeError('credentials must be "headers" or "query"');
    }
    this.#url = url;
    this.#client = options.client.trim();
    this.#token = options.token;
    this.#getToken = options.getToken;
    this.#credentials = credentials;
    this.#WebSocket = options.WebSocket;
    this.#pageSize = pageSize;
    this.#heartbeatMs = heartbeatMs;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#parse = options.parse ?? JSON.parse;
    this.#backoff = new Backoff(options.backoff);
    this.#pacer = new Pacer(options.rate);
  }

  // -- public API ---------------------------------------------------------------------

  /** connecting | catching_up | live | closed */
  get state() {
    return this.#state;
  }

  /** The client name: also the channel the server subscribes the connection to. */
  get client() {
    return this.#client;
  }

  /**
   * Follow `channel`. `sinceSeq`: deliver events after this seq (0: from the start);
   * absent: only events appended from now on. `epoch`: the epoch saved with `sinceSeq`;
   * if the server's differs, the channel is reset and starts over.
   * Resolves once the channel is caught up (its past delivered, live from here).
   */
  subscribe(channel, { sinceSeq, epoch } = {}) {
    if (this.#closed) return Promise.reject(new Error("client is closed"));
    checkName("channel", channel);
    const seq = checkSeq(sinceSeq);
    if (epoch !== undefined && epoch !== null && typeof epoch !== "string") {
      throw new TypeError("epoch must be a string");
    }
    let ch = this.#channels.get(channel);
    if (ch === undefined) {
      ch = new Channel(channel, seq, epoch ?? null);
      this.#channels.set(channel, ch);
      const conn = this.#conn;
      if (conn?.hello) {
        this.#checkEpoch(ch, conn.epoch);
        this.#follow(conn, ch);
        this.#updateState();
      }
    }
    if (ch.everLive) return Promise.resolve();
    const promise = new Promise((resolve, reject) => ch.waiters.push({ resolve, reject }));
    promise.catch(() => {}); // a caller that does not await it must not crash Node
    return promise;
  }

  /** Stop following `channel` (its position is forgotten). */
  unsubscribe(channel) {
    const ch = this.#channels.get(channel);
    if (ch === undefined) return;
    this.#drop(ch, new Error(`unsubscribed from ${channel}`));
    const conn = this.#conn;
    if (conn?.hello) this.#request(conn, { type: "unsubscribe", organization_id: channel });
    this.#updateState();
  }

  /** Last delivered seq and epoch of each channel, to persist and pass back to subscribe. */
  positions() {
    const out = {};
    for (const ch of this.#channels.values()) {
      if (ch.seq !== null) out[ch.name] = { seq: ch.seq, epoch: ch.epoch };
    }
    return out;
  }

  /** The subscribed channels. */
  channels() {
    return [...this.#channels.keys()];
  }

  /** Close for good (no reconnection). Resolves when the socket is closed. */
  close() {
    if (this.#closedPromise !== null) return this.#closedPromise;
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    this.#stopTimers();
    for (const ch of this.#channels.values()) this.#reject(ch, new Error("client closed"));
    const conn = this.#conn;
    this.#conn = null;
    this.#closedPromise = new Promise((resolve) => {
      if (conn === null || conn.ws.readyState === 3 /* CLOSED */) {
        resolve();
        return;
      }
      clearTimeout(conn.outboxTimer);
      const giveUp = setTimeout(done, 2000); // never wait on a peer that does not answer
      function done() {
        clearTimeout(giveUp);
        resolve();
      }
      conn.ws.onclose = done;
      conn.ws.onerror = () => {};
      conn.ws.onmessage = null;
      try {
        conn.ws.close(CloseCode.NORMAL);
      } catch {
        done(); // still CONNECTING in some implementations
      }
    });
    this.#setState("closed");
    return this.#closedPromise;
  }

  // -- connection lifecycle -------------------------------------------------------------

  /** Open the first connection (connect() calls this). */
  start() {
    if (!this.#started) {
      this.#started = true;
      void this.#open();
    }
    return this;
  }

  async #open() {
    this.#reconnectTimer = null;
    if (this.#closed) return;
    this.#setState("connecting");
    let token;
    let WebSocketClass;
    try {
      token = this.#getToken ? await this.#getToken() : this.#token;
      if (token !== undefined && token !== null && typeof token !== "string") {
        throw new TypeError("getToken must return a string");
      }
      WebSocketClass = await webSocketClass(this.#WebSocket);
    } catch (error) {
      this.emit("error", { kind: "connect", message: String(error?.message ?? error), error });
      this.#scheduleReconnect();
      return;
    }
    if (this.#closed) return;
    this.#token = token ?? undefined;
    let ws;
    try {
      ws = openSocket(WebSocketClass, this.#url, {
        client: this.#client,
        token: this.#token,
        credentials: this.#credentials,
      });
    } catch (error) {
      this.emit("error", { kind: "connect", message: String(error?.message ?? error), error });
      this.#scheduleReconnect();
      return;
    }
    // queue: requests sent and not answered yet, oldest first; outbox: waiting to be sent.
    const conn = {
      ws,
      hello: false,
      queue: [],
      outbox: [],
      outboxTimer: null,
      epoch: null,
      lastHeard: Date.now(),
    };
    this.#conn = conn;
    // An upgrade that hangs (a proxy that never answers) must not stall us either.
    this.#helloTimer = setTimeout(() => {
      this.#abandon(conn, 1006, `no answer within ${this.#connectTimeoutMs} ms`);
    }, this.#connectTimeoutMs);
    ws.onmessage = (event) => {
      if (this.#conn !== conn) return;
      conn.lastHeard = Date.now();
      if (typeof event.data === "string") this.#onMessage(conn, event.data);
    };
    ws.onerror = (event) => {
      if (this.#conn !== conn) return;
      const message = event?.message || event?.error?.message || "WebSocket error";
      this.emit("error", { kind: "connection", message });
      // A failed opening is followed by a close event in browsers, but not by every
      // WebSocket (Node 20's stays CONNECTING for ever): count it as closed now.
      if (ws.readyState !== 1 /* OPEN */) this.#abandon(conn, 1006, message);
    };
    ws.onclose = (event) => {
      if (this.#conn !== conn) return;
      this.#onClose(conn, event.code, event.reason);
    };
  }

  #onClose(conn, code, reason) {
    if (this.#conn === conn) this.#conn = null;
    clearTimeout(conn.outboxTimer);
    this.#stopTimers();
    for (const ch of this.#channels.values()) {
      ch.live = false;
      ch.held.clear(); // the next catch-up travels from ch.seq and brings them again
    }
    this.emit("disconnect", { code, reason: reason ?? "" });
    if (this.#closed) return;
    this.#setState("connecting");
    this.#scheduleReconnect();
  }

  /** Give up on a connection that misbehaves or went silent; the close handler resumes. */
  #abandon(conn, code, reason) {
    if (this.#conn !== conn) return;
    // Detach first: closing a socket may fire its error and close events right away.
    conn.ws.onmessage = null;
    conn.ws.onclose = null;
    conn.ws.onerror = () => {};
    try {
      if (typeof conn.ws.terminate === "function") conn.ws.terminate(); // `ws`: no handshake
      else conn.ws.close(CloseCode.NORMAL);
    } catch {
      // already closing
    }
    this.#onClose(conn, code, reason);
  }

  #scheduleReconnect() {
    if (this.#closed || this.#reconnectTimer !== null) return;
    this.#reconnectTimer = setTimeout(() => void this.#open(), this.#backoff.next());
  }

  #stopTimers() {
    clearTimeout(this.#helloTimer);
    clearTimeout(this.#refreshTimer);
    clearInterval(this.#heartbeatTimer);
    this.#refreshTimer = null;
    this.#heartbeatTimer = null;
  }

  // -- messages -------------------------------------------------------------------------

  #onMessage(conn, text) {
    let message;
    try {
      message = this.#parse(text);
    } catch (error) {
      this.emit("error", { kind: "protocol", message: `not JSON: ${String(error)}` });
      return;
    }
    if (message === null || typeof message !== "object") return;
    if (typeof message.organization_id === "string" && message.data !== undefined) {
      this.#onEvent(message.organization_id, message.data);
      return;
    }
    if (!conn.hello) {
      if (message.status === "subscribed" && !("organization_id" in message)) {
        this.#onHello(conn, message);
      }
      return;
    }
    if (message.status === "unsubscribed" && message.reason !== undefined) {
      // Not an answer: a refreshed token no longer covers this channel.
      const ch = this.#channels.get(message.organization_id);
      if (ch !== undefined) {
        this.#refuse(ch, "forbidden", `token no longer allows reading ${ch.name}`);
      }
      return;
    }
    const request = conn.queue.shift();
    if (request === undefined) return; // nothing asked: ignore what a newer server adds
    if (message.status === "error") {
      this.#onError(conn, request, message);
      return;
    }
    switch (request.kind) {
      case "subscribe":
        if (this.#current(request)) this.#checkEpoch(request.ch, message.epoch);
        break;
      case "travel":
        if (this.#current(request)) this.#onTravelComplete(conn, request, message);
        break;
      case "refresh":
        if (typeof message.expires_at_ms === "number") {
          this.#scheduleRefresh(conn, message.expires_at_ms);
        }
        break;
      default: // unsubscribe, ping
        break;
    }
  }

  #onHello(conn, hello) {
    conn.hello = true;
    clearTimeout(this.#helloTimer);
    conn.epoch = typeof hello.epoch === "string" ? hello.epoch : null;
    this.emit("connect", { epoch: conn.epoch, expiresAtMs: hello.expires_at_ms ?? null });
    if (!this.#channels.has(this.#client)) {
      // The server subscribes every connection to its client name's channel; nobody
      // asked for it here, so do not let its traffic count toward the slow-consumer limit.
      this.#request(conn, { type: "unsubscribe", organization_id: this.#client });
    }
    for (const ch of this.#channels.values()) {
      this.#checkEpoch(ch, conn.epoch);
      this.#follow(conn, ch);
    }
    if (typeof hello.expires_at_ms === "number") this.#scheduleRefresh(conn, hello.expires_at_ms);
    if (this.#heartbeatMs > 0) {
      this.#heartbeatTimer = setInterval(() => this.#heartbeat(conn), this.#heartbeatMs);
    }
    this.#updateState();
  }

  /** Subscribe `ch` on `conn` and start its catch-up (pipelined: answers come in order). */
  #follow(conn, ch) {
    ch.live = false;
    ch.generation += 1;
    const request = { kind: "subscribe", ch, generation: ch.generation };
    this.#request(conn, { type: "subscribe", organization_id: ch.name }, request);
    this.#travel(conn, ch);
  }

  #travel(conn, ch) {
    if (ch.seq === null) {
      // "From now": the newest event tells where now is (it is not delivered).
      this.#request(
        conn,
        { type: "travel", organization_id: ch.name, limit: 1 },
        { kind: "travel", ch, since: null, generation: ch.generation },
      );
    } else {
      this.#request(
        conn,
        { type: "travel", organization_id: ch.name, since_seq: ch.seq, limit: this.#pageSize },
        { kind: "travel", ch, since: ch.seq, generation: ch.generation },
      );
    }
  }

  /** Send a message (paced, in order); its answer will be matched to `request`. */
  #request(conn, message, request = { kind: message.type }) {
    conn.outbox.push([message, request]);
    if (conn.outboxTimer === null) this.#flush(conn);
  }

  #flush(conn) {
    conn.outboxTimer = null;
    while (conn.outbox.length > 0 && this.#conn === conn) {
      const waitMs = this.#pacer.take();
      if (waitMs > 0) {
        conn.outboxTimer = setTimeout(() => this.#flush(conn), waitMs);
        return;
      }
      const [message, request] = conn.outbox.shift();
      conn.queue.push(request);
      try {
        conn.ws.send(JSON.stringify(message));
      } catch (error) {
        // The socket is closing: its close handler resumes everything.
        this.emit("error", { kind: "connection", message: String(error?.message ?? error) });
        return;
      }
    }
  }

  /** Whether a request is for the channel's current subscription (not dropped or redone). */
  #current(request) {
    const ch = request.ch;
    return this.#channels.get(ch.name) === ch && request.generation === ch.generation;
  }

  // -- events, catch-up and the merge -----------------------------------------------------

  #onEvent(channel, data) {
    const ch = this.#channels.get(channel);
    if (ch === undefined || data === null || typeof data !== "object") return;
    const seq = data.seq;
    if (!Number.isSafeInteger(seq)) return;
    if (ch.seq === null) {
      ch.held.set(seq, data); // "from now" not resolved yet: its travel ack will say
      return;
    }
    if (seq <= ch.seq) return; // already delivered (travel and live overlap)
    if (seq === ch.seq + 1) {
      this.#deliver(ch, data);
      this.#drain(ch);
      return;
    }
    ch.held.set(seq, data);
    if (ch.live) {
      // A hole in live delivery (the protocol says it cannot happen): fetch it rather
      // than skip it; what came after waits in `held`.
      const conn = this.#conn;
      ch.live = false;
      if (conn?.hello) this.#travel(conn, ch);
      this.#updateState();
    }
  }

  #deliver(ch, data) {
    ch.seq = data.seq;
    this.emit("event", {
      channel: ch.name,
      seq: data.seq,
      tsMs: data.ts_ms,
      payload: data.payload,
      epoch: ch.epoch,
    });
  }

  /** Deliver what was held and now continues the sequence; forget what is behind it. */
  #drain(ch) {
    if (ch.held.size === 0) return;
    let next = ch.held.get(ch.seq + 1);
    while (next !== undefined && this.#channels.get(ch.name) === ch) {
      ch.held.delete(next.seq);
      this.#deliver(ch, next);
      next = ch.held.get(ch.seq + 1);
    }
    for (const seq of ch.held.keys()) if (seq <= ch.seq) ch.held.delete(seq);
  }

  #onTravelComplete(conn, request, ack) {
    const ch = request.ch;
    if (typeof ack.epoch === "string" && ch.epoch !== null && ack.epoch !== ch.epoch) {
      // The log changed under this connection: everything it sent is from the new epoch.
      this.#reset(ch, ack.epoch);
      this.#travel(conn, ch);
      return;
    }
    if (typeof ack.epoch === "string") ch.epoch = ack.epoch;
    const gaps = (Array.isArray(ack.gaps) ? ack.gaps : [])
      .filter((gap) => gap?.organization_id === ch.name && Number.isSafeInteger(gap.to_seq))
      .sort((a, b) => a.from_seq - b.from_seq);
    if (request.since === null) {
      // "From now": the newest seq at the travel's start is where the channel stands. Live
      // events after that are held back by the server until after this ack.
      let newest = 0;
      for (const seq of ch.held.keys()) newest = Math.max(newest, seq);
      for (const gap of gaps) newest = Math.max(newest, gap.to_seq);
      ch.seq = newest;
      ch.held.clear();
      this.#goLive(ch);
      return;
    }
    this.#drain(ch);
    for (const gap of gaps) {
      if (gap.to_seq <= ch.seq) continue;
      this.emit("gap", {
        channel: ch.name,
        fromSeq: Math.max(gap.from_seq, ch.seq + 1),
        toSeq: gap.to_seq,
        epoch: ch.epoch,
      });
      ch.seq = gap.to_seq;
      this.#drain(ch);
    }
    if (this.#channels.get(ch.name) !== ch) return; // a listener unsubscribed it
    if (ack.has_more === true) {
      this.#travel(conn, ch);
      return;
    }
    if (ch.held.size > 0) {
      // Events beyond a hole that the travel did not fill. Ask once more; if the log has
      // nothing for the hole either, tell the application rather than wait for ever.
      if (ch.seq === request.since && ack.count === 0 && gaps.length === 0) {
        const first = Math.min(...ch.held.keys());
        this.emit("gap", { channel: ch.name, fromSeq: ch.seq + 1, toSeq: first - 1, epoch: ch.epoch });
        ch.seq = first - 1;
        this.#drain(ch);
      } else {
        this.#travel(conn, ch);
        return;
      }
    }
    this.#goLive(ch);
  }

  #goLive(ch) {
    ch.live = true;
    if (!ch.everLive) {
      ch.everLive = true;
      for (const waiter of ch.waiters.splice(0)) waiter.resolve();
    }
    this.#updateState();
  }

  /** A new epoch: seqs of the old one mean nothing now; start the channel over. */
  #checkEpoch(ch, epoch) {
    if (typeof epoch !== "string") return;
    if (ch.epoch === null) {
      ch.epoch = epoch;
    } else if (ch.epoch !== epoch) {
      this.#reset(ch, epoch);
    }
  }

  #reset(ch, epoch) {
    const previous = { previousEpoch: ch.epoch, lastSeq: ch.seq };
    ch.epoch = epoch;
    ch.seq = 0;
    ch.held.clear();
    this.emit("reset", { channel: ch.name, epoch, ...previous });
  }

  // -- errors -----------------------------------------------------------------------------

  #onError(conn, request, message) {
    const code = String(message.error);
    const text = String(message.message ?? code);
    const ch = request.ch;
    if (code === "forbidden" || code === "limit_exceeded") {
      if (ch !== undefined && this.#current(request)) this.#refuse(ch, code, text);
      return;
    }
    if (request.kind === "refresh") {
      this.emit("error", { kind: "refresh", code, message: text });
      this.#refreshTimer = setTimeout(() => void this.#refresh(conn), RETRY_REQUEST_MS);
      return;
    }
    if (request.kind === "travel" && code === "unavailable") {
      // The server's storage failed this travel; events already sent stay delivered.
      this.emit("error", { kind: "server", code, message: text, channel: ch.name });
      setTimeout(() => {
        if (this.#conn === conn && this.#current(request)) this.#travel(conn, ch);
      }, RETRY_REQUEST_MS);
      return;
    }
    if (code === "rate_limited") {
      // Dropped unanswered: send it again, slower. A dropped subscribe redoes the whole
      // catch-up (the travel after it may have gone through while not subscribed, so
      // events appended meanwhile would not come live): its stale answers are ignored.
      this.#pacer.slowDown();
      if (request.kind === "subscribe" && this.#current(request)) this.#follow(conn, ch);
      else if (request.kind === "travel" && this.#current(request)) this.#travel(conn, ch);
      return;
    }
    if (request.kind === "ping" || request.kind === "unsubscribe") return;
    // A subscribe or travel that failed otherwise (internal_error): its channel's
    // catch-up cannot go on on this connection. A new one resumes everything.
    this.emit("error", { kind: "server", code, message: text, channel: ch?.name });
    this.#abandon(conn, 1006, `${code}: ${text}`);
  }

  /** The server will not give us this channel: drop it and tell the application. */
  #refuse(ch, code, text) {
    this.#drop(ch, Object.assign(new Error(text), { code, channel: ch.name }));
    this.emit("error", { kind: "channel", code, message: text, channel: ch.name });
    this.#updateState();
  }

  #drop(ch, error) {
    this.#channels.delete(ch.name);
    this.#reject(ch, error);
  }

  #reject(ch, error) {
    for (const waiter of ch.waiters.splice(0)) waiter.reject(error);
  }

  // -- token refresh and heartbeat --------------------------------------------------------

  /**
   * Refresh ahead of expiry: with 20 % of the lifetime left, at least 1 s and at most
   * 60 s before it (the server closes with 1008 at `exp`). Without getToken there is
   * nothing to refresh with: the next connection will need a valid token.
   */
  #scheduleRefresh(conn, expiresAtMs) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (this.#getToken === undefined || this.#conn !== conn) return;
    const remaining = expiresAtMs - Date.now();
    const lead = Math.min(remaining / 2, Math.min(60_000, Math.max(1000, remaining * 0.2)));
    this.#refreshTimer = setTimeout(() => void this.#refresh(conn), Math.max(0, remaining - lead));
  }

  async #refresh(conn) {
    this.#refreshTimer = null;
    let token;
    try {
      token = await this.#getToken();
      if (typeof token !== "string") throw new TypeError("getToken must return a string");
    } catch (error) {
      if (this.#conn !== conn) return;
      this.emit("error", { kind: "refresh", message: String(error?.message ?? error) });
      this.#refreshTimer = setTimeout(() => void this.#refresh(conn), RETRY_REQUEST_MS);
      return;
    }
    if (this.#conn !== conn) return;
    this.#token = token;
    this.#request(conn, { type: "refresh", token }, { kind: "refresh" });
  }

  /** Notice a connection that went silent (no close ever came): ping, then give up. */
  #heartbeat(conn) {
    const silentMs = Date.now() - conn.lastHeard;
    if (silentMs >= 2 * this.#heartbeatMs) {
      this.#abandon(conn, 1006, `nothing heard for ${silentMs} ms`);
    } else if (silentMs >= this.#heartbeatMs) {
      this.#request(conn, { type: "ping" });
    }
  }

  // -- state --------------------------------------------------------------------------------

  #updateState() {
    if (this.#closed) return;
    const conn = this.#conn;
    if (conn === null || !conn.hello) {
      this.#setState("connecting");
      return;
    }
    for (const ch of this.#channels.values()) {
      if (!ch.live) {
        this.#setState("catching_up");
        return;
      }
    }
    this.#backoff.reset(); // this connection got somewhere: start the delays over
    this.#setState("live");
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.emit("state", state);
  }
}

/** Create a client and start connecting; see AthenaClient for the options. */
export function connect(url, options) {
  return new AthenaClient(url, options).start();
}
