// A minimal listener registry: the same code in Node and in browsers, no dependency.
//
// A listener that throws does not stop the client (its position and buffers stay
// consistent): the error is rethrown on its own, as EventTarget does with a listener's
// exception, so it is reported (and, in Node, crashes the process unless handled) rather
// than swallowed.

export class Emitter {
  #listeners = new Map();

  on(type, listener) {
    if (typeof listener !== "function") throw new TypeError("listener must be a function");
    let set = this.#listeners.get(type);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(type, set);
    }
    set.add(listener);
    return this;
  }

  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
    return this;
  }

  once(type, listener) {
    const wrapper = (value) => {
      this.off(type, wrapper);
      listener(value);
    };
    return this.on(type, wrapper);
  }

  emit(type, value) {
    const set = this.#listeners.get(type);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
