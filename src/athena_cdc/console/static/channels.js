import { api } from "./api.js";
import { ago, el, number, replaceRows } from "./format.js";
import { Poller } from "./poller.js";

export class ChannelsView {
  constructor(showError) {
    this.showError = showError;
    this.body = document.querySelector("#channels-table tbody");
    this.info = document.getElementById("channels-info");
    this.search = document.getElementById("channel-search");
    this.cursor = null; // null: the first page, which refreshes itself
    this.next = null;
    this.poller = new Poller(() => this.refresh(), 3000);
    let debounce = null;
    this.search.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { this.cursor = null; this.refresh(); }, 250);
    });
    document.getElementById("channels-next").addEventListener("click", () => {
      if (this.next) { this.cursor = this.next; this.refresh(); }
    });
    document.getElementById("channels-first").addEventListener("click", () => {
      this.cursor = null; this.refresh();
    });
  }

  show() { this.poller.start(); }
  hide() { this.poller.stop(); }
  pause() { this.poller.stop(); }
  resume() { this.poller.start(); }

  async refresh() {
    let page;
    try {
      page = await api("channels", { q: this.search.value, limit: 50, cursor: this.cursor });
    } catch (error) {
      this.showError(error);
      return;
    }
    this.showError(null);
    this.next = page.next_cursor;
    document.getElementById("channels-next").disabled = !this.next;
    const span = page.window_s === null ? "rates from the next sample on" : `rates over the last ${number(page.window_s)} s`;
    this.info.textContent = `${number(page.known)} channels in memory; ${span}`;
    const rows = page.channels.map((c) => el("tr", {},
      el("td", {}, el("a", { href: `#/channel/${encodeURIComponent(c.name)}`, text: c.name })),
      el("td", { class: "num", text: number(c.events_per_s) }),
      el("td", { class: "num", text: number(c.last_seq) }),
      el("td", { text: ago(c.last_ts_ms) }),
      el("td", { class: "num", text: number(c.subscribers) })));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5, class: "muted", text: "no channel" })));
    replaceRows(this.body, rows);
  }
}
