import { api } from "./api.js";
import { drawRates } from "./chart.js";
import { bytes, card, duration, el, number, replaceRows } from "./format.js";
import { Poller } from "./poller.js";

export class ServerView {
  constructor(showError) {
    this.showError = showError;
    this.poller = new Poller(() => this.refresh(), 1000);
    this.cards = document.getElementById("server-cards");
    this.chart = document.getElementById("rate-chart");
    this.sources = document.querySelector("#sources-table tbody");
    this.points = [];
    window.addEventListener("resize", () => drawRates(this.chart, this.points));
  }

  show() { this.poller.start(); }
  hide() { this.poller.stop(); }
  pause() { this.poller.stop(); }
  resume() { this.poller.start(); }

  async refresh() {
    let stats;
    try {
      stats = await api("stats");
    } catch (error) {
      this.showError(error);
      return;
    }
    this.showError(null);
    document.getElementById("version").textContent = `v${stats.version}`;
    const store = stats.store;
    this.cards.replaceChildren(
      card("version", stats.version, `up ${duration(stats.uptime_s)}`),
      card("store", store.name, store.health ? `unhealthy: ${store.health}` : `epoch ${store.epoch}`),
      card("channels", number(store.channels), `${number(store.events)} events, ${bytes(store.bytes)}`),
      card("connections", number(stats.connections), `${number(stats.subscriptions)} subscriptions`),
      card("events in / s", number(stats.events.in_per_s), `${number(stats.events.appended)} appended`),
      card("events out / s", number(stats.events.out_per_s), `${number(stats.events.delivered)} delivered`),
    );
    this.cards.querySelector(".card").id = "card-version";
    this.points = stats.history;
    drawRates(this.chart, this.points);
    const rows = stats.sources.map((s) => el("tr", {},
      el("td", { text: s.name }),
      el("td", {}, el("span", { class: s.health ? "badge bad" : "badge ok", text: s.health || "streaming" })),
      el("td", { class: "num", text: s.lag_error ? s.lag_error : bytes(s.lag_bytes) }),
      el("td", { class: "num", text: s.lag_seconds === null ? "–" : s.lag_seconds.toFixed(3) }),
      el("td", { class: "num", text: number(s.rows_applied) }),
      el("td", { class: "num", text: number(s.transactions) }),
      el("td", { text: s.last_commit_lsn || "–" })));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "no source (events come from POST /events only)" })));
    replaceRows(this.sources, rows);
  }
}
