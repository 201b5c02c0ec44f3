// Reconnection delays: exponential with jitter (about 0.5 s doubling to 30 s, as the
// protocol page's "Resuming without loss" asks), so that clients dropped together by a
// server restart do not all come back in the same instant.

export class Backoff {
  #initialMs;
  #maxMs;
  #attempt = 0;

  constructor({ initialMs = 500, maxMs = 30_000 } = {}) {
    if (!(initialMs > 0) || !(maxMs >= initialMs)) {
      throw new RangeError("backoff: need 0 < initialMs <= maxMs");
    }
    this.#initialMs = initialMs;
    this.#maxMs = maxMs;
  }

  /** The next delay in ms: a random value in [d/2, d] for d = initial * 2^attempt. */
  next() {
    const ceiling = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#attempt);
    if (ceiling < this.#maxMs) this.#attempt += 1;
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** Start again from the initial delay (after a connection that got caught up). */
  reset() {
    this.#attempt = 0;
  }
}
