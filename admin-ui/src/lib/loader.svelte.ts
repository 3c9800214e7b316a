import { errorMessage } from "./api";

/**
 * One read a page shows (a list, a status): the value once it came, the server's message when it
 * did not, `loading` until either. `load()` reads again (after a change, or on a timer) and keeps
 * what is shown meanwhile: a failed read keeps the last value and sets `error`, the next good one
 * clears it. Pages build it with `loader(read)`.
 */
export class Loader<T> {
  value = $state<T>();
  error = $state<string>();
  readonly #read: () => Promise<T>;

  constructor(read: () => Promise<T>) {
    this.#read = read;
  }

  get loading(): boolean {
    return this.value === undefined && this.error === undefined;
  }

  async load(): Promise<void> {
    try {
      this.value = await this.#read();
      this.error = undefined;
    } catch (err) {
      this.error = errorMessage(err);
    }
  }
}

/** A loader that starts reading at once (in a page's script: the read runs when the page opens). */
export function loader<T>(read: () => Promise<T>): Loader<T> {
  const l = new Loader(read);
  void l.load();
  return l;
}

/**
 * A form's submission: `busy` while it runs (the button says so and is disabled), the server's
 * message in `error` when it fails, and the form's own line in `notice` when it succeeded. The
 * same lines every form on a page would otherwise repeat.
 */
export class Task {
  busy = $state(false);
  error = $state<string>();
  notice = $state<string>();

  /** Runs `work` unless it is already running; true when it finished without an error (then `notice` is `done`). */
  async run(work: () => Promise<unknown>, done?: string): Promise<boolean> {
    if (this.busy) return false;
    this.busy = true;
    this.error = undefined;
    this.notice = undefined;
    try {
      await work();
      this.notice = done;
      return true;
    } catch (err) {
      this.error = errorMessage(err);
      return false;
    } finally {
      this.busy = false;
    }
  }
}
