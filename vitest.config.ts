import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/helpers/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: integration files each create a database and often a daemon process.
    maxWorkers: 2,
    pool: "forks",
    // Files share a worker's module graph (one import of the daemon per worker, not per file: ~4 minutes of
    // a 2-core run). Safe because nothing per appliance lives at module level: such state is keyed by the
    // appliance's context (WeakMap), and every file makes its own database, clock and appliance.
    isolate: false,
    // A screen polled for what the user sees gets 10 s, not vitest's 1 s: on a busy 2-core runner a page's
    // first fetch alone can take longer than a second. A poll that never matches still fails.
    expect: { poll: { timeout: 10_000 } },
  },
});
