/**
 * What the `wardkeep keys|unseal|tls` commands share: unsealing a CLI process's own barrier (it
 * works on the key store directly, like `wardkeep migrate` on the schema), reading secrets from
 * files or the terminal, and talking to the running daemon over HTTPS on loopback, trusting the
 * internal CA in dataDir/tls/ca.crt.
 */
import fs from "node:fs";
import https from "node:https";
import path from "node:path";
import type { TLSSocket } from "node:tls";
import { inDataDir } from "../config/load.js";
import type { Config } from "../config/schema.js";
import type { ApplianceContext } from "../context.js";
import { pendingMigrations } from "../db/migrate.js";
import { openKeyStore, readSealRecord } from "./seal.js";
import { isInteractive, promptHidden } from "./unseal/prompt.js";
import { UnsealError } from "./unseal/source.js";

export class OperatorError extends Error {
  override name = "OperatorError";
}

export function readSecretFile(file: string, what: string): string {
  try {
    return (file === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(file, "utf8")).replace(/\r?\n$/, "");
  } catch (err) {
    throw new OperatorError(`cannot read the ${what} file ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
}

/** A share from a file that may carry other text (the files `keys split --out-dir` writes do). */
export function extractShare(text: string): string {
  return /wks1-[A-Za-z0-9-]+/i.exec(text)?.[0] ?? text.trim();
}

/** A passphrase from a file, or typed twice on the terminal when it is new. */
export async function obtainPassphrase(file: string | undefined, opts: { confirm?: boolean; what?: string } = {}): Promise<string> {
  const what = opts.what ?? "passphrase";
  if (file) return readSecretFile(file, what);
  if (!isInteractive()) throw new OperatorError(`no terminal to ask for the ${what}: give it with --passphrase-file FILE (- for stdin)`);
  const first = await promptHidden(`${what[0]!.toUpperCase()}${what.slice(1)}: `);
  if (opts.confirm) {
    const again = await promptHidden(`Repeat the ${what}: `);
    if (again !== first) throw new OperatorError(`the two ${what}s differ; nothing was changed`);
  }
  return first;
}

export async function assertSchemaCurrent(ctx: ApplianceContext): Promise<void> {
  if ((await pendingMigrations(ctx.db.app)).length) throw new OperatorError("the database schema is not current; run `wardkeep migrate` first");
}

export type CurrentSecret = { passphraseFile?: string; shareFiles?: string[] };

/**
 * Opens this process's barrier with the key store's current unseal source: automatic for a key
 * file or HSM; a passphrase or shares from files, or typed on the terminal.
 */
export async function unsealForOperator(ctx: ApplianceContext, secret: CurrentSecret = {}): Promise<void> {
  await assertSchemaCurrent(ctx);
  const record = await readSealRecord(ctx);
  if (!record) throw new OperatorError(`the key store is not initialised: run \`wardkeep keys init --unseal ${ctx.config.keys.unseal}\``);
  try {
    switch (record.mode) {
      case "keyfile":
      case "pkcs11":
        await openKeyStore(ctx, {}, record);
        return;
      case "passphrase":
        await openKeyStore(ctx, { passphrase: await obtainPassphrase(secret.passphraseFile ?? ctx.config.keys.passphraseFile, { what: "current unseal passphrase" }) }, record);
        return;
      case "shamir": {
        const threshold = Number((record.params as { threshold?: number }).threshold ?? 0);
        let shares = (secret.shareFiles ?? []).map((f) => extractShare(readSecretFile(f, "share")));
        if (shares.length === 0) {
          if (!isInteractive()) throw new OperatorError(`this key store needs ${threshold} custodian shares: give them with --share-file FILE (repeat it)`);
          shares = [];
          for (let i = 1; i <= threshold; i++) shares.push(await promptHidden(`Share ${i} of ${threshold}: `));
        }
        await openKeyStore(ctx, { shares }, record);
        return;
      }
    }
  } catch (err) {
    if (err instanceof UnsealError) throw new OperatorError(err.message);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// The running daemon, over HTTPS on loopback
// ---------------------------------------------------------------------------------------------

export type DaemonTarget = { url: string; ca?: string };

export function daemonTarget(config: Config, opts: { url?: string; ca?: string } = {}): DaemonTarget {
  const url = opts.url ?? `https://127.0.0.1:${config.server.port}`;
  const caFile = opts.ca ?? path.join(inDataDir(config, "tls"), "ca.crt");
  return { url, ca: fs.existsSync(caFile) ? fs.readFileSync(caFile, "utf8") : undefined };
}

export type DaemonAnswer = { status: number; body: Record<string, unknown>; fingerprint256?: string };

/** One JSON request to the daemon; rejects with OperatorError when it cannot be reached. */
export function callDaemon(target: DaemonTarget, method: "GET" | "POST", pathname: string, body?: unknown): Promise<DaemonAnswer> {
  const url = new URL(pathname, target.url);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method,
        ca: target.ca,
        // The internal certificate names 127.0.0.1 and localhost; a hospital certificate may not, so a
        // custom --url should use a name it covers.
        headers: { accept: "application/json", ...(payload ? { "content-type": "application/json", "content-length": String(payload.length) } : {}) },
        timeout: 15_000,
      },
      (res) => {
        const peer = (res.socket as TLSSocket).getPeerCertificate?.();
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: Record<string, unknown> = {};
          try {
            parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
          } catch {
            parsed = { detail: text.slice(0, 200) };
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, fingerprint256: peer?.fingerprint256 });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (err) =>
      reject(new OperatorError(`cannot reach the daemon at ${target.url} (${(err as NodeJS.ErrnoException).code ?? err.message}); is it running? (--url to point elsewhere)`)),
    );
    if (payload) req.write(payload);
    req.end();
  });
}
