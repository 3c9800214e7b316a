/**
 * Unsealing: at start (automatic sources, a passphrase file or prompt) and afterwards through
 * `POST /api/v1/keys/unseal` (`wardkeep unseal`), Vault-style: a passphrase, or Shamir shares one
 * at a time from different custodians with progress. Unsealing is per replica: each daemon holds
 * its keys in its own memory, so each is unsealed on its own (automatic sources do it at start).
 */
import fs from "node:fs";
import { inDataDir } from "../../config/load.js";
import type { ApplianceContext } from "../../context.js";
import { Conflict, Forbidden, Invalid, Unavailable, type AppError } from "../../kernel/errors.js";
import type { RootKey, UnsealMode } from "../root-key.js";
import { initialiseKeyStore, openKeyStore, readSealRecord } from "../seal.js";
import type { SealRow } from "../keystore.js";
import { sqlState } from "../../db/sql.js";
import { isInteractive, promptHidden } from "./prompt.js";
import { ShamirProgress } from "./shamir.js";
import { UnsealError } from "./source.js";

export { UnsealError } from "./source.js";

export type SealProgress = {
  sealed: boolean;
  /** The key store's unseal mode (or the configured one before initialisation). */
  mode: UnsealMode;
  initialised: boolean;
  reason?: string;
  unsealedAt?: string;
  /** Shamir: shares entered on this replica so far. */
  progress?: { provided: number; threshold: number; shares: number };
};

const progressOf = new WeakMap<RootKey, ShamirProgress>();
/** Barriers that stayed sealed only because the key store's tables did not exist yet (migrations pending). */
const waitingForSchema = new WeakMap<RootKey, { lastTry: number }>();
const queueOf = new WeakMap<RootKey, Promise<unknown>>();

function shamirProgress(rootKey: RootKey): ShamirProgress {
  let progress = progressOf.get(rootKey);
  if (!progress) {
    const created = new ShamirProgress();
    progressOf.set(rootKey, created);
    progress = created;
  }
  return progress;
}

/** One unseal attempt at a time per replica: two shares arriving together must not both "complete". */
function serialised<T>(rootKey: RootKey, work: () => Promise<T>): Promise<T> {
  const previous = queueOf.get(rootKey) ?? Promise.resolve();
  const next = previous.catch(() => undefined).then(work);
  queueOf.set(rootKey, next);
  return next;
}

class SchemaPending extends Error {}

async function sealRecordOrUndefined(ctx: ApplianceContext, opts: { schemaRequired?: boolean } = {}): Promise<SealRow | undefined> {
  try {
    return await readSealRecord(ctx);
  } catch (err) {
    // 42P01 undefined_table: migrations have not created the key store yet.
    if (sqlState(err) === "42P01") {
      if (opts.schemaRequired) throw new SchemaPending("the key store does not exist yet: migrations are pending (`wardkeep migrate`)");
      return undefined;
    }
    throw err;
  }
}

/**
 * A daemon started before `wardkeep migrate` could not unseal (no key store yet). Readiness
 * checks and maintenance call this: once the schema exists, the start-up unseal runs again (at
 * most once a second), so the appliance becomes ready without a restart.
 */
export async function retryUnsealAfterMigration(ctx: ApplianceContext): Promise<void> {
  const waiting = waitingForSchema.get(ctx.rootKey);
  if (!waiting || !ctx.rootKey.isSealed) return;
  const now = Date.now();
  if (now - waiting.lastTry < 1000) return;
  waiting.lastTry = now;
  await serialised(ctx.rootKey, () => (ctx.rootKey.isSealed && waitingForSchema.has(ctx.rootKey) ? unsealAtStart(ctx) : Promise.resolve()));
}

export async function sealProgress(ctx: ApplianceContext): Promise<SealProgress> {
  const record = await sealRecordOrUndefined(ctx);
  const state = ctx.rootKey.state;
  const out: SealProgress = {
    sealed: state.sealed,
    mode: record?.mode ?? ctx.rootKey.mode,
    initialised: Boolean(record),
    ...(state.sealed ? { reason: state.reason } : { unsealedAt: state.unsealedAt.toISOString() }),
  };
  if (state.sealed && record?.mode === "shamir") {
    const params = record.params as { threshold?: number; shares?: number };
    out.progress = { provided: shamirProgress(ctx.rootKey).provided, threshold: params.threshold ?? 0, shares: params.shares ?? 0 };
  }
  return out;
}

function readPassphraseFile(file: string): string {
  try {
    return fs.readFileSync(file, "utf8").replace(/\r?\n$/, "");
  } catch (err) {
    throw new UnsealError(`cannot read the passphrase file ${file} (${(err as NodeJS.ErrnoException).code})`, "unavailable");
  }
}

export type StartUnsealOptions = {
  /** Asks for a passphrase on the terminal (the CLI's `start` passes one when run interactively). */
  prompt?: (question: string) => Promise<string>;
};

/**
 * Called once by `startAppliance`. Never throws: anything that prevents unsealing leaves the
 * barrier sealed with the reason, which /readyz and 503 answers then name.
 */
export async function unsealAtStart(ctx: ApplianceContext, options: StartUnsealOptions = {}): Promise<void> {
  const { config, log } = ctx;
  const prompt = options.prompt ?? (config.keys.promptAtStart && isInteractive() ? (q: string) => promptHidden(q) : undefined);
  waitingForSchema.delete(ctx.rootKey);
  try {
    const record = await sealRecordOrUndefined(ctx, { schemaRequired: true });
    if (!record) {
      const initialised = await initialiseAtFirstStart(ctx);
      if (!initialised) {
        ctx.rootKey.markSealed(`the key store is not initialised: run \`wardkeep keys init --unseal ${config.keys.unseal}\``);
        log.warn(`starting sealed: ${ctx.rootKey.state.sealed ? ctx.rootKey.state.reason : ""}`);
      }
      return;
    }
    ctx.rootKey.mode = record.mode;
    if (record.mode !== config.keys.unseal) {
      // The key store decides (a rekey changed it); the configuration only names it for new installs and replicas.
      log.warn(
        `keys.unseal is ${config.keys.unseal} but the key store is sealed with ${record.mode}; using ${record.mode}. Set keys.unseal: ${record.mode} in the configuration (or WARDKEEP_KEYS_UNSEAL=${record.mode}) so new replicas agree`,
      );
    }
    switch (record.mode) {
      case "keyfile":
        await openKeyStore(ctx, {}, record);
        log.warn("unsealed from a key file: for evaluation only; production must use passphrase, shamir or pkcs11");
        return;
      case "pkcs11":
        await openKeyStore(ctx, {}, record);
        log.info("unsealed with the HSM");
        return;
      case "passphrase":
        if (config.keys.passphraseFile) {
          await openKeyStore(ctx, { passphrase: readPassphraseFile(config.keys.passphraseFile) }, record);
          log.info("unsealed with the passphrase file");
          return;
        }
        if (prompt) {
          for (let attempt = 1; attempt <= 3; attempt++) {
            try {
              await openKeyStore(ctx, { passphrase: await prompt("Unseal passphrase: ") }, record);
              log.info("unsealed with the passphrase typed at start");
              return;
            } catch (err) {
              if (!(err instanceof UnsealError) || err.kind !== "wrong-secret" || attempt === 3) throw err;
              process.stderr.write(`${err.message}; try again\n`);
            }
          }
        }
        ctx.rootKey.markSealed("waiting for the unseal passphrase: run `wardkeep unseal`");
        break;
      case "shamir": {
        const params = record.params as { threshold?: number; shares?: number };
        ctx.rootKey.markSealed(`waiting for ${params.threshold} of ${params.shares} custodian shares: each custodian runs \`wardkeep unseal\``);
        break;
      }
    }
    log.warn(`starting sealed: ${ctx.rootKey.state.sealed ? ctx.rootKey.state.reason : ""}`);
  } catch (err) {
    if (err instanceof SchemaPending) waitingForSchema.set(ctx.rootKey, { lastTry: Date.now() });
    ctx.rootKey.markSealed((err as Error).message);
    log.warn(`starting sealed: ${(err as Error).message}`);
  }
}

/** First start of a new install: only the sources that need no ceremony initialise themselves. */
async function initialiseAtFirstStart(ctx: ApplianceContext): Promise<boolean> {
  const { config, log } = ctx;
  if (config.keys.unseal === "keyfile") {
    const result = await initialiseKeyStore(ctx, "keyfile", {});
    const where = result.createdFile
      ? `root key file created at ${result.createdFile}`
      : `key store initialised with the provisioned key file ${inDataDir(config, config.keys.keyFile)}`;
    log.warn(
      `${where}. KEYFILE UNSEAL IS FOR EVALUATION ONLY: anyone who copies the data directory and the database has every key. Production must use keys.unseal = passphrase, shamir or pkcs11 (\`wardkeep keys rekey\`).`,
    );
    log.warn("a recovery key pair was made: write its private half with `wardkeep keys recovery-kit --out-file FILE` and store it offline");
    return true;
  }
  if (config.keys.unseal === "passphrase" && config.keys.passphraseFile) {
    await initialiseKeyStore(ctx, "passphrase", { passphrase: readPassphraseFile(config.keys.passphraseFile) });
    log.info("key store initialised with the passphrase from keys.passphraseFile");
    log.warn("a recovery key pair was made: write its private half with `wardkeep keys recovery-kit --out-file FILE` and store it offline");
    return true;
  }
  return false;
}

export type UnsealRequest = { passphrase?: string; share?: string; reset?: boolean };

/**
 * One step of an operator unseal. Shamir: each call adds one share; the key is combined when the
 * threshold is reached, and a wrong result resets the progress (every custodian starts over).
 */
export async function submitUnseal(ctx: ApplianceContext, request: UnsealRequest): Promise<SealProgress> {
  return serialised(ctx.rootKey, async () => {
    const record = await sealRecordOrUndefined(ctx);
    if (!record) throw new UnsealError(`the key store is not initialised: run \`wardkeep keys init --unseal ${ctx.config.keys.unseal}\``, "not-initialised");
    const progress = shamirProgress(ctx.rootKey);
    if (request.reset) {
      progress.reset();
      return sealProgress(ctx);
    }
    if (!ctx.rootKey.isSealed) return sealProgress(ctx);
    ctx.rootKey.mode = record.mode;
    switch (record.mode) {
      case "passphrase":
        if (!request.passphrase) throw new UnsealError("this key store is unsealed with a passphrase: send `passphrase`", "malformed");
        await openKeyStore(ctx, { passphrase: request.passphrase }, record);
        break;
      case "shamir": {
        if (!request.share) throw new UnsealError("this key store is unsealed with Shamir shares: send one `share`", "malformed");
        const step = progress.add(record.params, request.share);
        if (!step.complete) return sealProgress(ctx);
        const shares = progress.take();
        try {
          await openKeyStore(ctx, { shares }, record);
        } catch (err) {
          if (err instanceof UnsealError) throw new UnsealError(`${err.message}; unseal progress was reset: every custodian enters their share again`, err.kind);
          throw err;
        }
        break;
      }
      default:
        // Automatic sources: retry (after fixing the key file or plugging in the HSM).
        await openKeyStore(ctx, {}, record);
    }
    progress.reset();
    ctx.log.info("unsealed by an operator", { mode: record.mode });
    return sealProgress(ctx);
  });
}

/** Closes the barrier on this replica (operator action or emergency); progress is reset too. */
export function sealAppliance(ctx: ApplianceContext, reason: string): void {
  shamirProgress(ctx.rootKey).reset();
  ctx.rootKey.seal(reason);
  ctx.log.warn("sealed", { reason });
}

/** The HTTP answer for an unseal failure: 403 wrong secret, 400 malformed, 409 not initialised, 503 device missing. */
export function unsealProblem(err: UnsealError): AppError {
  switch (err.kind) {
    case "wrong-secret":
      return new Forbidden(err.message);
    case "malformed":
      return new Invalid(err.message);
    case "not-initialised":
      return new Conflict(err.message);
    default:
      return new Unavailable(err.message);
  }
}
