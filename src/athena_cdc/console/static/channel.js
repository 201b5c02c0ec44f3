// One channel: its numbers, a live tail (a WebSocket client of /ws) and a travel form
// (GET /api/events, paged through has_more).
import { api, socketUrl } from "./api.js";
import { ago, card, el, number, pretty, replaceRows, time } from "./format.js";
import { Poller } from "./poller.js";

const TAIL_KEEP = 200; // events shown in the tail; older ones are dropped from the page
const TAIL_BACKLOG = 20; // the last events shown when the tail opens (a travel)
const RECONNECT_MS = 3000; // a tail that lost its socket tries again after this

export class ChannelView {
  constructor(showError) {
    this.showError = showError;
    this.name = "";
    this.socket = null;
    this.paused = false;
    this.buffered = [];
    this.lastSeq = null;
    this.travelParams = null;
    this.reconnect = null;
    this.nameInput = document.getElementById("channel-name");
    this.cards = document.getElementById("channel-cards");
    this.tail = document.getElementById("tail");
    this.status = document.getElementById("tail-status");
    this.pauseButton = document.getElementById("tail-pause");
    this.poller = new Poller(() => this.refreshInfo(), 2000);
    document.getElementById("channel-open").addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = `#/channel/${encodeURIComponent(this.nameInput.value.trim())}`;
    });
    this.pauseButton.addEventListener("click", () => this.togglePause());
    document.getElementById("tail-clear").addEventListener("click", () => this.tail.replaceChildren());
    document.getElementById("travel-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.travel(this.formParams());
    });
    document.getElementById("travel-next").addEventListener("click", () => {
      if (this.travelParams) this.travel(this.travelParams);
    });
  }

  show(name) {
    if (!name && this.name) name = this.name; // the nav link: back to the channel open
    if (name !== this.name) this.open(name);
    else if (name && !this.socket) this.connect();
    if (this.name) this.poller.start();
  }

  hide() {
    this.poller.stop();
    this.disconnect();
  }

  pause() { this.poller.stop(); }
  resume() { if (this.name) this.poller.start(); }

  open(name) {
    this.disconnect();
    this.name = name;
    this.nameInput.value = name;
    this.tail.replaceChildren();
    this.cards.replaceChildren();
    this.lastSeq = null;
    this.buffered = [];
    this.setPaused(false);
    replaceRows(document.querySelector("#travel-table tbody"), []);
    document.getElementById("travel-summary").textContent = "";
    document.getElementById("travel-gaps").replaceChildren();
    document.getElementById("travel-next").hidden = true;
    if (!name) {
      this.setStatus("closed", "pick a channel");
      return;
    }
    this.connect();
    this.poller.start();
  }

  async refreshInfo() {
    if (!this.name) return;
    let info;
    try {
      info = await api("channel", { name: this.name });
    } catch (error) {
      this.showError(error);
      return;
    }
    this.cards.replaceChildren(
      card("channel", info.name, `epoch ${info.epoch}`),
      card("last seq", number(info.last_seq), `${number(info.retained)} retained from seq ${number(info.first_seq)}`),
      card("last event", ago(info.last_ts_ms), time(info.last_ts_ms)),
      card("subscribers", number(info.subscribers)),
      card("events / s", number(info.events_per_s)),
    );
  }

  // -- tail -------------------------------------------------------------------------
  connect() {
    const socket = new WebSocket(socketUrl(this.name));
    this.socket = socket;
    this.setStatus("connecting", "connecting…");
    socket.addEventListener("message", (message) => {
      if (socket !== this.socket) return;
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onMessage(data);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      const why = event.code === 1006
        ? "connection refused or lost (with auth on, the tail needs a token whose channels cover this channel)"
        : `closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`;
      this.setStatus("error", `${why}; retrying`);
      // Tried again while the view is open; events already shown are not shown twice.
      this.reconnect = setTimeout(() => {
        this.reconnect = null;
        if (!this.socket && this.name && !document.getElementById("view-channel").hidden) this.connect();
      }, RECONNECT_MS);
    });
  }

  disconnect() {
    clearTimeout(this.reconnect);
    this.reconnect = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, "console closed the tail");
    this.setStatus("closed", "closed");
  }

  onMessage(data) {
    if (data.status === "subscribed") {
      this.setStatus("live", this.paused ? "paused" : "live");
      // The last few events first (after a reconnect: what was missed meanwhile); live
      // ones follow the travel's ack, in order.
      const travel = this.lastSeq === null
        ? { type: "travel", organization_id: this.name, limit: TAIL_BACKLOG }
        : { type: "travel", organization_id: this.name, since_seq: this.lastSeq, limit: TAIL_KEEP };
      this.socket.send(JSON.stringify(travel));
      return;
    }
    if (data.status === "travel_complete") {
      for (const gap of data.gaps || []) this.addNote("gap", `gap: seqs ${gap.from_seq}–${gap.to_seq} are not in the log (retention dropped them)`);
      return;
    }
    if (data.status === "error") {
      this.addNote("note", `server: ${data.error}: ${data.message}`);
      return;
    }
    if (data.status) {
      this.addNote("note", `server: ${data.status}${data.reason ? ` (${data.reason})` : ""}`);
      return;
    }
    if (data.data && data.organization_id === this.name) {
      if (this.paused) {
        this.buffered.push(data);
        this.setStatus("paused", `paused, ${this.buffered.length} waiting`);
      } else {
        this.addEvent(data);
      }
    }
  }

  addEvent(message) {
    const { seq, ts_ms: ts, payload } = message.data;
    if (this.lastSeq !== null && seq > this.lastSeq + 1) {
      this.addNote("gap", `gap: seqs ${this.lastSeq + 1}–${seq - 1} not received`);
    }
    if (this.lastSeq !== null && seq <= this.lastSeq) return; // already shown
    this.lastSeq = seq;
    const node = el("div", { class: "event", "data-seq": seq },
      el("div", { class: "meta", text: `seq ${seq} · ${time(ts)}` }),
      el("pre", { text: pretty(payload) }));
    this.tail.prepend(node);
    while (this.tail.childElementCount > TAIL_KEEP) this.tail.lastElementChild.remove();
  }

  addNote(kind, text) {
    this.tail.prepend(el("div", { class: `event ${kind}`, text }));
  }

  togglePause() {
    this.setPaused(!this.paused);
    if (!this.paused) {
      const waiting = this.buffered;
      this.buffered = [];
      for (const message of waiting) this.addEvent(message);
    }
  }

  setPaused(paused) {
    this.paused = paused;
    this.pauseButton.textContent = paused ? "Resume" : "Pause";
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.setStatus(paused ? "paused" : "live", paused ? `paused, ${this.buffered.length} waiting` : "live");
    }
  }

  setStatus(kind, text) {
    this.status.className = `status ${kind}`;
    this.status.textContent = text;
  }

  // -- travel -----------------------------------------------------------------------
  formParams() {
    const sinceTime = document.getElementById("travel-since-time").value;
    return {
      channel: this.name,
      since_seq: document.getElementById("travel-since-seq").value,
      since_ts_ms: sinceTime ? String(new Date(sinceTime).getTime()) : "",
      limit: document.getElementById("travel-limit").value,
    };
  }

  async travel(params) {
    if (!this.name) return;
    let result;
    try {
      result = await api("events", params);
    } catch (error) {
      this.showError(error);
      return;
    }
    this.showError(null);
    const from = params.since_seq !== "" && params.since_seq !== undefined
      ? `after seq ${params.since_seq}`
      : params.since_ts_ms ? `from ${time(Number(params.since_ts_ms))}` : "the newest";
    document.getElementById("travel-summary").textContent =
      `${result.count} events, ${from}${result.has_more ? "; more follow" : ""}`;
    document.getElementById("travel-gaps").replaceChildren(...result.gaps.map((g) =>
      el("div", { class: "gap", text: `gap: seqs ${g.from_seq}–${g.to_seq} are not in the log` })));
    replaceRows(document.querySelector("#travel-table tbody"), result.events.map((e) =>
      el("tr", { "data-seq": e.data.seq },
        el("td", { class: "num", text: e.data.seq }),
        el("td", { text: time(e.data.ts_ms) }),
        el("td", {}, el("pre", { text: pretty(e.data.payload) })))));
    const next = document.getElementById("travel-next");
    // With a cursor the next page follows the last row; a travel without one answers
    // the newest events, and what it leaves out is older (travel from a seq for those).
    const paged = result.has_more && (result.since_seq !== null || result.since_ts_ms !== null);
    next.hidden = !paged;
    this.travelParams = paged
      ? { channel: this.name, since_seq: String(result.next_since_seq), limit: String(result.limit) }
      : null;
  }
}
