// Types for athena-cdc-client (the package is plain ES2022 JavaScript; these are written
// by hand beside it).

/** The constructor of a WHATWG-style WebSocket: the global one, or `ws`'s. */
export type WebSocketConstructor = new (
  url: string,
  protocolsOrOptions?: string | string[] | { headers?: Record<string, string> },
) => {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
};

export interface ConnectOptions {
  /** The client name (X-Athena-Client, or ?client= in browsers). */
  client: string;
  /** A token, sent on every connection (Authorization: Bearer, or ?token= in browsers). */
  token?: string;
  /**
   * Called for a token before every connection and before the token in force expires
   * (the server's `expires_at_ms`); the new token is sent with a `refresh` message.
   */
  getToken?: () => string | Promise<string>;
  /** Where name and token go: "headers" (default in Node) or "query" (default in browsers). */
  credentials?: "headers" | "query";
  /** The WebSocket class (default: the global WebSocket, else the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** Events per travel page while catching up (1 to 50,000; default 5,000). */
  pageSize?: number;
  /** Reconnection delays: jittered, initialMs doubling to maxMs (default 500 and 30,000). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Ping after this long without hearing from the server, drop after twice it (default 30,000; 0: off). */
  heartbeatMs?: number;
  /**
   * Pace of the messages sent (subscribes, travels, refreshes, pings): a burst, then so
   * many per second (default 800, then 80/s: under the server's default 1,000 and 100/s).
   */
  rate?: { perSecond?: number; burst?: number };
  /** Give up on a connection attempt not answered within this (default 15,000). */
  connectTimeoutMs?: number;
  /** Parses each message (default JSON.parse); e.g. one that keeps big integers exact. */
  parse?: (text: string) => unknown;
}

export interface SubscribeOptions {
  /** Deliver events after this seq (0: from the start). Absent: from now on. */
  sinceSeq?: number | null;
  /** The epoch saved with sinceSeq; a different epoch on the server resets the channel. */
  epoch?: string | null;
}

export type ClientState = "connecting" | "catching_up" | "live" | "closed";

export interface Position {
  seq: number;
  epoch: string | null;
}

export interface AthenaEvent {
  channel: string;
  seq: number;
  tsMs: number;
  payload: unknown;
  epoch: string | null;
}

/** Seqs fromSeq..toSeq (inclusive) were dropped by retention before they could be delivered. */
export interface AthenaGap {
  channel: string;
  fromSeq: number;
  toSeq: number;
  epoch: string | null;
}

/** The log's epoch changed: the channel starts over from seq 0 under `epoch`. */
export interface AthenaReset {
  channel: string;
  epoch: string;
  previousEpoch: string | null;
  lastSeq: number | null;
}

export interface AthenaError {
  kind: "connect" | "connection" | "protocol" | "refresh" | "server" | "channel";
  message: string;
  /** The server's error code (forbidden, limit_exceeded, unauthorized, rate_limited, ...). */
  code?: string;
  channel?: string;
  error?: unknown;
}

export interface ClientEvents {
  event: AthenaEvent;
  gap: AthenaGap;
  reset: AthenaReset;
  state: ClientState;
  connect: { epoch: string | null; expiresAtMs: number | null };
  disconnect: { code: number; reason: string };
  error: AthenaError;
}

export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  SHUTDOWN: 1001;
  TOKEN_EXPIRED: 1008;
  EPOCH_CHANGED: 1012;
  SLOW_CONSUMER: 4008;
}>;

export declare class AthenaClient {
  constructor(url: string, options: ConnectOptions);
  /** Start connecting (connect() does it for you). */
  start(): this;
  readonly state: ClientState;
  readonly client: string;
  /** Follow a channel; resolves once it is caught up, rejects if the server refuses it. */
  subscribe(channel: string, options?: SubscribeOptions): Promise<void>;
  unsubscribe(channel: string): void;
  /** Last delivered seq and epoch per channel: persist them, pass them back to subscribe. */
  positions(): Record<string, Position>;
  channels(): string[];
  /** Close for good; resolves once the socket is closed. */
  close(): Promise<void>;
  on<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): this;
  once<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): this;
  off<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): this;
}

/** Create a client and start connecting. */
export declare function connect(url: string, options: ConnectOptions): AthenaClient;
