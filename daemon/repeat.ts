/**
 * Work a daemon repeats in the background on every replica: every `everyMs` (and once
 * `firstAfterMs` after start, when given), never two runs at once, none begun after `stop()`,
 * which waits for the run in flight. A failed run goes to `onError` and the next interval
 * tries again. The timers do not keep the process alive.
 */
export function repeatInBackground(opts: { everyMs: number; firstAfterMs?: number; onError: (err: Error) => void }, work: () => Promise<unknown>): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  let stopped = false;
  const run = () => {
    if (stopped) return;
    running = running.then(() => (stopped ? undefined : work())).catch((err: unknown) => opts.onError(err as Error));
  };
  const timer = setInterval(run, opts.everyMs);
  timer.unref();
  const first = opts.firstAfterMs === undefined ? undefined : setTimeout(run, opts.firstAfterMs);
  first?.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      clearTimeout(first);
      await running;
    },
  };
}
