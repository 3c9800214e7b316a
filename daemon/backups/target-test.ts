import { randomBytes } from "node:crypto";
import type { Readable } from "node:stream";
import { openTarget, targetDefinitionSchema, type SnapshotTarget, type TargetDefinition, type TargetSecrets } from "../../backup/targets/index.js";
import { appendAuditEvent } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Invalid } from "../kernel/errors.js";
import { openPolicySecrets, presentPolicy, readPolicyRow, writePolicy } from "./policy.js";
import type { BackupPolicyRes, TargetTestReq, TargetTestRes } from "./schema.js";
import { settleAlertsForPolicy, type AuditMeta } from "./service.js";

/**
 * "Test connection" for a snapshot target, before it is saved (console, API and
 * `wardkeep backup target test|add`): connect, list, write a small probe object, read it back,
 * delete it. Each step is timed; the first failure ends the test with the target's own one-line
 * message (wrong password, missing bucket, host key mismatch), so the admin sees why in one line.
 */
const PROBE_PREFIX = "connection-tests";
/** A target that does not answer within this long fails the test (an unreachable host can hang a TCP connect for minutes). */
const STEP_TIMEOUT_MS = 15_000;

type Step = TargetTestRes["steps"][number];

function withTimeout<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${STEP_TIMEOUT_MS / 1000} s`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The first line of an error, without the "target NAME: " prefix the UI already shows beside it. */
function lineOf(name: string, err: unknown): string {
  const message = (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 300);
  return message.startsWith(`target ${name}: `) ? message.slice(`target ${name}: `.length) : message;
}

/** Runs the steps against an opened target; never throws (a failure is the answer). */
export async function probeTarget(target: SnapshotTarget, now: () => Date = () => new Date()): Promise<TargetTestRes> {
  const steps: Step[] = [];
  const key = `${PROBE_PREFIX}/${now().toISOString().replace(/[:.]/g, "")}-${randomBytes(4).toString("hex")}.txt`;
  const body = Buffer.from(`wardkeep connection test ${key}\n`);
  const run = async (name: Step["name"], work: () => Promise<string | void>): Promise<boolean> => {
    const started = performance.now();
    try {
      const note = await withTimeout(name, work());
      steps.push({ name, ok: true, ms: Math.round(performance.now() - started), detail: note || "ok" });
      return true;
    } catch (err) {
      steps.push({ name, ok: false, ms: Math.round(performance.now() - started), detail: lineOf(target.name, err) });
      return false;
    }
  };
  const ok =
    (await run("list", async () => `${(await target.list("snapshots/")).length} object(s) under snapshots/`)) &&
    (await run("write", () => target.putOnce(key, body))) &&
    (await run("read", async () => {
      const back = await readAll(await target.get(key));
      if (!back.equals(body)) throw new Error(`${key} read back ${back.length} bytes that differ from the ${body.length} written`);
    }));
  // The probe is removed when the target allows it; a WORM target refusing is reported, not a failure.
  if (steps.some((s) => s.name === "write" && s.ok)) {
    await run("delete", () => target.delete(key));
  }
  const failed = steps.find((s) => !s.ok && s.name !== "delete");
  const removed = steps.find((s) => s.name === "delete");
  return {
    target: target.name,
    where: target.describe(),
    ok: ok && !failed,
    detail: failed
      ? `${failed.name} failed: ${failed.detail}`
      : `connected to ${target.describe()}: listed, wrote, read back${removed?.ok ? " and deleted" : ""} a probe object${removed && !removed.ok ? ` (the probe stays: ${removed.detail})` : ""}`,
    steps,
    checkedAt: now().toISOString(),
  };
}

/**
 * Secrets for a definition under test: the ones given, else those stored for a saved target of
 * the same name and kind (so "test" works on a saved target without retyping its password).
 */
function secretsFor(def: TargetDefinition, given: TargetSecrets | undefined, saved: { defs: TargetDefinition[]; secrets: Record<string, TargetSecrets> }): TargetSecrets {
  if (given && Object.keys(given).length) return given;
  const same = saved.defs.find((d) => d.name === def.name && d.kind === def.kind);
  return same ? (saved.secrets[def.name] ?? {}) : {};
}

async function audited(ctx: ApplianceContext, meta: AuditMeta, action: string, resourceId: string, outcome: "success" | "failure") {
  await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    appendAuditEvent(ctx, t, {
      tenantId: null,
      actor: meta.actor,
      action,
      resourceType: "backup_target",
      resourceId,
      outcome,
      sourceIp: meta.sourceIp ?? null,
      userAgent: meta.userAgent ?? null,
      requestId: meta.requestId ?? null,
    }),
  );
}

/** Tests a target definition (saved or not) and records the test in the audit trail. */
export async function testTargetConnection(ctx: ApplianceContext, input: TargetTestReq, meta: AuditMeta): Promise<TargetTestRes> {
  const def = targetDefinitionSchema.parse(input.target);
  const saved = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const row = await readPolicyRow(ctx, t);
    return { defs: row.targets, secrets: openPolicySecrets(ctx, row) };
  });
  let target: SnapshotTarget;
  try {
    target = openTarget(def, secretsFor(def, input.secrets, saved));
  } catch (err) {
    // A secret file that cannot be read, for example.
    throw new Invalid(`target ${def.name}: ${lineOf(def.name, err)}`, { field: "target" });
  }
  try {
    const result = await probeTarget(target, () => ctx.clock.now());
    await audited(ctx, meta, "backup.target.test", def.name, result.ok ? "success" : "failure");
    return result;
  } finally {
    await target.close().catch(() => {});
  }
}

/**
 * Adds a target to the policy, or replaces the one of the same name (`wardkeep backup target add`):
 * tested first unless `skipTest`, and not saved when the test fails.
 */
export async function addTarget(
  ctx: ApplianceContext,
  input: TargetTestReq,
  meta: AuditMeta,
  opts: { skipTest?: boolean } = {},
): Promise<{ test: TargetTestRes | null; policy: BackupPolicyRes; replaced: boolean }> {
  const test = opts.skipTest ? null : await testTargetConnection(ctx, input, meta);
  if (test && !test.ok) return { test, policy: await currentPolicy(ctx), replaced: false };
  const def = targetDefinitionSchema.parse(input.target);
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const row = await readPolicyRow(ctx, t, true);
    const replaced = row.targets.some((d) => d.name === def.name);
    const targets = replaced ? row.targets.map((d) => (d.name === def.name ? def : d)) : [...row.targets, def];
    const secrets = input.secrets && Object.keys(input.secrets).length ? { targetSecrets: { [def.name]: input.secrets } } : {};
    const policy = await writePolicy(ctx, t, { targets, ...secrets }, meta.actor.userId ?? null);
    await settleAlertsForPolicy(ctx, t, policy);
    await appendAuditEvent(ctx, t, {
      tenantId: null,
      actor: meta.actor,
      action: "backup.policy.update",
      resourceType: "backup_policy",
      resourceId: def.name,
      outcome: "success",
      sourceIp: meta.sourceIp ?? null,
      userAgent: meta.userAgent ?? null,
      requestId: meta.requestId ?? null,
    });
    return { test, policy, replaced };
  });
}

async function currentPolicy(ctx: ApplianceContext): Promise<BackupPolicyRes> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const row = await readPolicyRow(ctx, t);
    return presentPolicy(row, ctx.rootKey.isSealed ? undefined : openPolicySecrets(ctx, row));
  });
}

/** The policy's targets as the API shows them (no secrets), for `wardkeep backup target list`. */
export async function listTargets(ctx: ApplianceContext): Promise<BackupPolicyRes["targets"]> {
  return (await currentPolicy(ctx)).targets;
}
