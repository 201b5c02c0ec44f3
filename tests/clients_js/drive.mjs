// The part of the test driver that runs in Node and in a browser alike: create the client
// from a config, print one JSON object per thing it emits, subscribe. See follow.mjs
// (Node) and browser_follow.mjs (headless Chromium).

export function drive(connect, config, print, getToken) {
  const options = {
    client: config.client,
    backoff: config.backoff ?? { initialMs: 50, maxMs: 500 },
  };
  for (const key of ["token", "credentials", "heartbeatMs", "pageSize"]) {
    if (config[key] !== undefined) options[key] = config[key];
  }
  if (getToken !== undefined) options.getToken = getToken;

  const client = connect(config.url, options);
  client.eventCount = 0;
  client.on("event", (event) => {
    client.eventCount += 1;
    print({ type: "event", ...event });
  });
  for (const type of ["gap", "reset", "error"]) {
    client.on(type, (value) => print({ type, ...value }));
  }
  // Connections and states carry the time (ms), for measuring how long a resume takes.
  for (const type of ["connect", "disconnect"]) {
    client.on(type, (value) => print({ type, ...value, atMs: Date.now() }));
  }
  client.on("state", (state) =>
    print({ type: "state", state, count: client.eventCount, atMs: Date.now() }),
  );
  for (const { channel, ...rest } of config.subscribe ?? []) {
    client.subscribe(channel, rest).then(
      () => print({ type: "subscribed", channel }),
      (error) => print({ type: "refused", channel, message: error.message }),
    );
  }
  return client;
}
