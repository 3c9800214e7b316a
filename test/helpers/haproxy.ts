import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { PROJECT_ROOT } from "./daemon-process.js";
import { freePort } from "./postgres.js";

/**
 * Debian's HAProxy run from the configuration files the deployment ships (deploy/haproxy*.cfg),
 * with only what a test host needs changed: the listening address, concrete servers instead of
 * Docker's DNS, and faster health checks. Each rewrite must match, so a test fails loudly when the
 * shipped file changes shape instead of silently testing something else.
 */

export type Server = { name: string; host: string; port: number };

export type RunningHaproxy = {
  port: number;
  config: string;
  output(): string;
  stop(): Promise<void>;
};

function replaceOnce(text: string, pattern: RegExp, replacement: string, what: string): string {
  if (!pattern.test(text)) throw new Error(`the shipped HAProxy configuration no longer has ${what} (${pattern}); update test/helpers/haproxy.ts`);
  return text.replace(pattern, replacement);
}

/** Drops a top-level section (`resolvers docker` …) up to the next blank line. */
function dropSection(text: string, header: RegExp, what: string): string {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => header.test(l));
  if (start < 0) throw new Error(`the shipped HAProxy configuration no longer has ${what}; update test/helpers/haproxy.ts`);
  let end = start + 1;
  while (end < lines.length && lines[end]!.trim() !== "") end++;
  lines.splice(start, end - start);
  return lines.join("\n");
}

/** deploy/haproxy.cfg for daemons on this host: same modes, checks and timeouts, local servers. */
export function daemonBalancerConfig(listenPort: number, servers: Server[], checkInterval = "300ms", opts: { proxyProtocol?: boolean } = {}): string {
  let cfg = fs.readFileSync(path.join(PROJECT_ROOT, "deploy/haproxy.cfg"), "utf8");
  cfg = dropSection(cfg, /^resolvers docker\b/, "the Docker resolvers section");
  cfg = replaceOnce(cfg, /^(\s*)bind :8443[ \t]*$/m, `$1bind 127.0.0.1:${listenPort}`, "the frontend's bind :8443");
  cfg = replaceOnce(cfg, /^(\s*default-server .*?)\s+resolvers docker init-addr none[ \t]*$/m, "$1", "default-server's Docker resolver");
  cfg = replaceOnce(cfg, /\binter \S+/, `inter ${checkInterval}`, "a check interval");
  // The client's address to the daemons (server.proxyProtocol), health checks included.
  if (opts.proxyProtocol) cfg = replaceOnce(cfg, /^(\s*default-server .*?)[ \t]*$/m, "$1 send-proxy-v2", "the default-server line");
  cfg = replaceOnce(
    cfg,
    /^(\s*)server-template replica \d+ wardkeep-replica:8443[ \t]*$/m,
    servers.map((s) => `$1server ${s.name} ${s.host}:${s.port}`).join("\n"),
    "the replica server-template",
  );
  return cfg;
}

/**
 * deploy/haproxy-postgres.cfg for PostgreSQL servers on this host, checked by a copy of
 * deploy/pg-is-primary.sh in `dir` with its pg-probe.env (the probe's login) beside it.
 */
export function postgresBalancerConfig(listenPort: number, servers: Server[], dir: string, probe: { user: string; password: string }): string {
  const script = path.join(dir, "pg-is-primary.sh");
  fs.copyFileSync(path.join(PROJECT_ROOT, "deploy/pg-is-primary.sh"), script);
  fs.chmodSync(script, 0o755);
  fs.writeFileSync(path.join(dir, "pg-probe.env"), `PGUSER=${probe.user}\nPGPASSWORD=${probe.password}\nPGDATABASE=postgres\n`, { mode: 0o600 });
  let cfg = fs.readFileSync(path.join(PROJECT_ROOT, "deploy/haproxy-postgres.cfg"), "utf8");
  cfg = replaceOnce(cfg, /^(\s*)bind :5432[ \t]*$/m, `$1bind 127.0.0.1:${listenPort}`, "the frontend's bind :5432");
  cfg = replaceOnce(cfg, /^(\s*external-check command )\S+[ \t]*$/m, `$1${script}`, "the primary check command");
  cfg = replaceOnce(
    cfg,
    /^(\s*)server db-a db-a:5432\n\s*server db-b db-b:5432[ \t]*$/m,
    servers.map((s) => `$1server ${s.name} ${s.host}:${s.port}`).join("\n"),
    "the two database servers",
  );
  return cfg;
}

async function waitForPort(port: number, child: ChildProcess, output: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`haproxy exited ${child.exitCode}: ${output()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`haproxy did not listen on ${port}: ${output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts `haproxy -db` (foreground) with `config`, after `haproxy -c` accepts it; `env` reaches external checks. */
export async function startHaproxy(config: string, listenPort: number, dir: string, env: Record<string, string> = {}): Promise<RunningHaproxy> {
  const file = path.join(dir, `haproxy-${listenPort}.cfg`);
  fs.writeFileSync(file, config.endsWith("\n") ? config : config + "\n");
  const check = spawn("haproxy", ["-c", "-f", file], { stdio: ["ignore", "pipe", "pipe"] });
  let checkOut = "";
  check.stdout.on("data", (d: Buffer) => (checkOut += d.toString()));
  check.stderr.on("data", (d: Buffer) => (checkOut += d.toString()));
  const code = await new Promise<number | null>((resolve) => check.on("close", resolve));
  if (code !== 0) throw new Error(`haproxy -c rejected the configuration: ${checkOut}`);
  const child = spawn("haproxy", ["-db", "-f", file], { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  await waitForPort(listenPort, child, () => out);
  return {
    port: listenPort,
    config,
    output: () => out,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

export { freePort };
