// Client-side pacing of the messages a client sends, so that resuming many channels
// at once (a subscribe and a travel each, then more pages) stays under the server's
// --client-rate-limit (default 100 messages/s in bursts of 1,000) instead of having
// messages dropped with `rate_limited`. A token bucket: `burst` at once, then `perSecond`.

export class Pacer {
  #perSecond;
  #burst;
  #tokens;
  #updatedMs;
  #slowedAtMs = -Infinity;

  constructor({ perSecond = 80, burst = 800 } = {}) {
    if (!(perSecond > 0) || !(burst >= 1)) {
      throw new RangeError("rate: need perSecond > 0 and burst >= 1");
    }
    this.#perSecond = perSecond;
    this.#burst = burst;
    this.#tokens = burst;
    this.#updatedMs = Date.now();
  }

  /** Take one message's token if there is one; else how many ms until there is. */
  take() {
    const now = Date.now();
    this.#tokens = Math.min(
      this.#burst,
      this.#tokens + ((now - this.#updatedMs) / 1000) * this.#perSecond,
    );
    this.#updatedMs = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.#tokens) / this.#perSecond) * 1000);
  }

  /**
   * The server said `rate_limited`: its limit is lower than ours; halve ours (once per
   * second: the messages already on their way are refused together for one cause).
   */
  slowDown() {
    const now = Date.now();
    this.#tokens = 0; // the server's bucket is empty now: wait before the next message
    if (now - this.#slowedAtMs < 1000) return;
    this.#slowedAtMs = now;
    this.#perSecond = Math.max(1, this.#perSecond / 2);
    this.#burst = Math.max(1, Math.floor(this.#burst / 2));
  }
}
