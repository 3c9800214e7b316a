import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import S3rver from "s3rver";
import { freePort } from "../../helpers/postgres.js";
import { tempDir } from "./helpers.js";

/**
 * A real OpenSSH server from Debian's package, on a loopback port, with its own host key,
 * configuration and authorized key; it runs as root (sshd needs it for privilege separation),
 * in the foreground (-D) logging to stderr (-e).
 */
export type Sshd = {
  port: number;
  dir: string;
  root: string;
  clientKey: string;
  hostKeySha256: string;
  /** Kills the listener and every session process it forked (by pid), like a server going away. */
  kill(): Promise<void>;
  /** Starts the server again on the same port, keys and directory (after `kill`). */
  restart(): Promise<void>;
  stop(): Promise<void>;
};

function descendants(pid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry), ...descendants(Number(entry)));
    } catch {
      /* the process ended while we looked */
    }
  }
  return out;
}

async function waitForPort(port: number, child: ChildProcess, log: () => string) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sshd exited: ${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.end();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`sshd did not listen: ${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startSshd(): Promise<Sshd> {
  const dir = tempDir("wardkeep-sshd-");
  const root = path.join(dir, "store");
  fs.mkdirSync(root);
  fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "host_ed25519")]);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "client_ed25519")]);
  fs.copyFileSync(path.join(dir, "client_ed25519.pub"), path.join(dir, "authorized_keys"));
  const hostKeySha256 = execFileSync("ssh-keygen", ["-lf", path.join(dir, "host_ed25519.pub")])
    .toString()
    .split(" ")[1]!;
  const port = await freePort();
  fs.writeFileSync(
    path.join(dir, "sshd_config"),
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${path.join(dir, "host_ed25519")}`,
      `PidFile ${path.join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "AllowUsers root",
      "UsePAM no",
      "StrictModes no",
      "Subsystem sftp internal-sftp",
      "",
    ].join("\n"),
  );
  let log = "";
  let child: ChildProcess;
  const launch = async () => {
    child = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", path.join(dir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
    child.stderr!.on("data", (d: Buffer) => {
      log = (log + d.toString()).slice(-4000);
    });
    await waitForPort(port, child, () => log);
  };
  await launch();
  const kill = async () => {
    const pids = [child.pid!, ...descendants(child.pid!)];
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
    if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once("exit", r));
  };
  return {
    port,
    dir,
    root,
    clientKey: fs.readFileSync(path.join(dir, "client_ed25519"), "utf8"),
    hostKeySha256,
    kill,
    restart: launch,
    async stop() {
      await kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type S3Server = { endpoint: string; bucket: string; dir: string; stop(): Promise<void> };

/** s3rver: a real S3-protocol server in Node, its state in a temp directory. */
export async function startS3(bucket = "wardkeep-snapshots"): Promise<S3Server> {
  const dir = tempDir("wardkeep-s3rver-");
  const server = new S3rver({ port: 0, address: "127.0.0.1", silent: true, directory: dir, configureBuckets: [{ name: bucket }] });
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    dir,
    async stop() {
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
