import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export const PROJECT_ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** A clean environment: nothing from the developer's shell leaks in as configuration. */
function baseEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, LANG: "C.UTF-8", TMPDIR: process.env.TMPDIR };
  return { ...env, ...extra };
}

/** The bundle the test run's global setup built (cli-bundle.ts); the sources through tsx elsewhere (benchmarks). */
export const wardkeepArgs = (args: string[]) => {
  const bundle = process.env.WARDKEEP_TEST_CLI_BUNDLE;
  return bundle ? ["--enable-source-maps", bundle, ...args] : ["--import", "tsx", "daemon/cli/main.ts", ...args];
};

export type CliResult = { code: number | null; stdout: string; stderr: string };

/** Runs `wardkeep <args>` as a real process, the way an operator or script would. */
export function runCli(args: string[], env: Record<string, string> = {}, input?: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, wardkeepArgs(args), { cwd: PROJECT_ROOT, env: baseEnv(env), stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? "");
  });
}

export type DaemonProcess = {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Parsed JSON log lines so far. */
  logs(): Record<string, unknown>[];
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  port(): Promise<number>;
  /** Sends the signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
};

/**
 * `wardkeep start` as a separate process: for restart, signal and multi-replica tests. `prefix`: a
 * command that runs it (e.g. `unshare --pid --fork --kill-child --mount-proc`: a PID namespace of
 * its own, as in a container).
 */
export function spawnDaemon(env: Record<string, string>, opts: { prefix?: string[] } = {}): DaemonProcess {
  const [command, ...args] = [...(opts.prefix ?? []), process.execPath, ...wardkeepArgs(["start"])];
  const child = spawn(command!, args, { cwd: PROJECT_ROOT, env: baseEnv(env), stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  const waiters = new Set<() => void>();
  const notify = () => waiters.forEach((w) => w());
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
    notify();
  });
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
    notify();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let exitCode: number | null | undefined;
  void exited.then((c) => {
    exitCode = c;
    notify();
  });

  const waitFor = (pattern: RegExp, timeoutMs = 60_000) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(out + err);
        if (match) {
          cleanup();
          resolve(match);
        } else if (exitCode !== undefined) {
          cleanup();
          reject(new Error(`daemon exited (${exitCode}) before ${pattern}: ${(out + err).slice(-1500)}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${pattern}: ${(out + err).slice(-1500)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  return {
    child,
    stdout: () => out,
    stderr: () => err,
    logs: () =>
      out
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    waitFor,
    port: async () => Number((await waitFor(/listening on https:\/\/[^:]+:(\d+)/))[1]),
    async stop(signal = "SIGTERM") {
      if (exitCode === undefined) child.kill(signal);
      return exited;
    },
    exited,
  };
}
