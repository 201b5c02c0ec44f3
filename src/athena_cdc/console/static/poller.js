// Calls `tick` every `intervalMs` while started, never two at a time.
export class Poller {
  constructor(tick, intervalMs) {
    this.tick = tick;
    this.intervalMs = intervalMs;
    this.timer = null;
    this.running = false;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.loop();
  }

  async loop() {
    if (!this.running) return;
    try {
      await this.tick();
    } finally {
      if (this.running) this.timer = setTimeout(() => this.loop(), this.intervalMs);
    }
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = null;
  }
}
