import { api } from "./api.js";
import { bytes, duration, el, number, replaceRows } from "./format.js";
import { Poller } from "./poller.js";

export class ConnectionsView {
  constructor(showError) {
    this.showError = showError;
    this.body = document.querySelector("#connections-table tbody");
    this.info = document.getElementById("connections-info");
    this.cursor = null;
    this.next = null;
    this.poller = new Poller(() => this.refresh(), 2000);
    document.getElementById("connections-next").addEventListener("click", () => {
      if (this.next) { this.cursor = this.next; this.refresh(); }
    });
    document.getElementById("connections-first").addEventListener("click", () => {
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
      page = await api("connections", { limit: 100, cursor: this.cursor });
    } catch (error) {
      this.showError(error);
      return;
    }
    this.showError(null);
    this.next = page.next_cursor;
    document.getElementById("connections-next").disabled = !this.next;
    this.info.textContent = `${number(page.total)} connections, ${number(page.slow)} slow `
      + `(slow: socket full, or ${bytes(page.slow_consumer_limit / 2)} or more waiting; closed with 4008 at ${bytes(page.slow_consumer_limit)})`;
    const rows = page.connections.map((c) => {
      const more = c.subscription_count - c.subscriptions.length;
      return el("tr", { class: c.slow ? "slow" : null, "data-client": c.client },
        el("td", { text: c.client }),
        el("td", { text: c.remote || "–" }),
        el("td", { text: c.subscriptions.join(", ") + (more > 0 ? ` and ${number(more)} more` : "") }),
        el("td", { class: "num", text: bytes(c.queued_bytes) }),
        el("td", { class: "num", text: duration(c.age_s) }),
        el("td", {}, c.slow ? el("span", { class: "badge slow", text: "slow" }) : null,
          c.closing ? el("span", { class: "badge bad", text: "closing" }) : null));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no connection" })));
    replaceRows(this.body, rows);
  }
}
