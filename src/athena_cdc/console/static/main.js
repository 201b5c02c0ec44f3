// The console: hash-routed views, each polling the ops API only while it is shown.
import { ApiError, api, setToken, token } from "./api.js";
import { ServerView } from "./server.js";
import { ChannelsView } from "./channels.js";
import { ChannelView } from "./channel.js";
import { ConnectionsView } from "./connections.js";

const banner = document.getElementById("banner");

export function showError(error) {
  if (!error) {
    banner.hidden = true;
    banner.textContent = "";
    return;
  }
  let text = error.message || String(error);
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    text = `${text} Enter an ops token (an admin JWT or the --ops-key value) above.`;
    document.getElementById("token").focus();
  }
  banner.textContent = text;
  banner.hidden = false;
}

const views = {
  server: new ServerView(showError),
  channels: new ChannelsView(showError),
  channel: new ChannelView(showError),
  connections: new ConnectionsView(showError),
};
let current = null;

function route() {
  const [, name = "server", ...rest] = location.hash.split("/");
  const view = views[name] ? name : "server";
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : "";
  if (current && current !== views[view]) current.hide();
  for (const [key, v] of Object.entries(views)) {
    document.getElementById(`view-${key}`).hidden = key !== view;
    document.querySelector(`nav a[data-view="${key}"]`).classList.toggle("active", key === view);
    if (key !== view) v.hide();
  }
  showError(null);
  current = views[view];
  current.show(arg);
}

const tokenInput = document.getElementById("token");
tokenInput.value = token();
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken(tokenInput.value.trim());
  route();
});

// The version in the header, whatever view opens first (the server view refreshes it).
api("stats").then((stats) => {
  document.getElementById("version").textContent = `v${stats.version}`;
}).catch(() => {});

window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => {
  // A hidden tab stops polling: the server pays nothing for a forgotten tab.
  if (document.hidden) current?.pause?.();
  else current?.resume?.();
});
route();
