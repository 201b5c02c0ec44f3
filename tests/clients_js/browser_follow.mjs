// The same driver as follow.mjs, with the client running in a web page in headless
// Chromium (driven by playwright-core; the browser is the machine's, never downloaded).
// The page is served from here over HTTP and loads clients/js/src as plain ES modules; it
// uses the browser's WebSocket, so the client name and token go in the URL.
//
// argv[2]: the follow.mjs config plus {chromium: "/path/to/chromium"}. Same stdout lines
// and stdin commands as follow.mjs.
import { readFile } from "node:fs/promises";
import http from "node:http";
import { createRequire } from "node:module";
import { extname, join, normalize } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

// playwright-core is a dev dependency of clients/js (installed there by `npm ci`).
const { chromium } = createRequire(new URL("../../clients/js/package.json", import.meta.url))(
  "playwright-core",
);

const config = JSON.parse(process.argv[2]);
const print = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);
const root = fileURLToPath(new URL("../../", import.meta.url)); // the repository
const served = ["clients/js/src/", "tests/clients_js/drive.mjs"];

const page_html = `<!doctype html><meta charset="utf-8"><title>athena-cdc-client</title>
<script type="module">
  import { connect } from "/clients/js/src/index.js";
  import { drive } from "/tests/clients_js/drive.mjs";
  const config = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  const getToken = config.tokenFromStdin ? () => window.needToken() : undefined;
  window.client = drive(connect, config, (line) => window.report(line), getToken);
</script>`;

const server = http.createServer(async (request, response) => {
  const path = normalize(decodeURIComponent(new URL(request.url, "http://x").pathname)).slice(1);
  if (path === "index.html") {
    response.writeHead(200, { "Content-Type": "text/html" }).end(page_html);
  } else if (served.some((prefix) => path.startsWith(prefix)) && extname(path).match(/^\.m?js$/)) {
    const body = await readFile(join(root, path));
    response.writeHead(200, { "Content-Type": "text/javascript" }).end(body);
  } else {
    response.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));

const browser = await chromium.launch({
  executablePath: config.chromium,
  // Root in a container needs --no-sandbox; the rest keep Chromium off the network.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = await browser.newPage();
page.on("pageerror", (error) => print({ type: "page_error", message: String(error) }));
const tokenWaiters = [];
await page.exposeFunction("report", print);
await page.exposeFunction(
  "needToken",
  () =>
    new Promise((resolve) => {
      tokenWaiters.push(resolve);
      print({ type: "need_token" });
    }),
);
print({ type: "runtime", globalWebSocket: true, userAgent: await browser.version() });
await page.goto(
  `http://127.0.0.1:${server.address().port}/index.html#${encodeURIComponent(JSON.stringify(config))}`,
);

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.token !== undefined) {
    tokenWaiters.shift()?.(command.token);
  } else if (command.cmd === "close") {
    const closed = await page.evaluate(async () => {
      await window.client.close();
      return { positions: window.client.positions(), count: window.client.eventCount };
    });
    print({ type: "closed", ...closed });
    await browser.close();
    server.close();
    process.exit(0);
  }
}
