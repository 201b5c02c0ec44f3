// How the upgrade request carries the client name and the token, and which WebSocket
// class opens it.
//
// Browsers cannot set headers on a WebSocket, so there the name and token go in the URL
// (`?client=`, `?token=`, which the server accepts when the header is absent and redacts
// from its logs). Node can: its global WebSocket (Node >= 22, or 20 with
// --experimental-websocket) and the `ws` package both take `{headers}` as the second
// argument, so the token stays out of URLs (and out of proxies' access logs).

const isNode = typeof globalThis.process?.versions?.node === "string";

/** "headers" in Node (and Deno/Bun, which also take {headers}), "query" in browsers. */
export function defaultCredentials() {
  return isNode || typeof globalThis.Deno !== "undefined" || typeof globalThis.Bun !== "undefined"
    ? "headers"
    : "query";
}

let wsPackage; // the `ws` module's WebSocket, once imported

/**
 * The WebSocket class to use: the one given, else the global one, else `ws` (Node < 22).
 * `ws` is an optional peer dependency, imported only when there is no global WebSocket.
 */
export async function webSocketClass(given) {
  if (given !== undefined) return given;
  if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket;
  if (wsPackage === undefined) {
    const name = "ws"; // not a literal import: bundlers for browsers must not pull it in
    try {
      const module = await import(/* webpackIgnore: true */ /* @vite-ignore */ name);
      wsPackage = module.WebSocket ?? module.default;
    } catch (error) {
      throw new Error(
        "athena-cdc-client: no WebSocket available. On Node < 22 install the `ws` package " +
          "(npm install ws), or pass {WebSocket} to connect().",
        { cause: error },
      );
    }
  }
  return wsPackage;
}

/** Open a socket whose upgrade names `client` and carries `token` (if any). */
export function openSocket(WebSocketClass, url, { client, token, credentials }) {
  if (credentials === "query") {
    const withParams = new URL(url);
    withParams.searchParams.set("client", client);
    if (token) withParams.searchParams.set("token", token);
    return new WebSocketClass(withParams.toString());
  }
  const headers = { "X-Athena-Client": client };
  if (token) headers.Authorization = `Bearer ${token}`;
  return new WebSocketClass(url, { headers });
}
