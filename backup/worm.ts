/**
 * The WORM self-test (DESIGN: "a self-test that the WORM target really refuses deletes"): a
 * retention setting that was never applied, or a bucket without Object Lock, looks exactly like a
 * working one until ransomware deletes the backups. So the test writes a small retained object
 * under `selftest/` and really tries to destroy it; only a refusal passes.
 */
import { randomBytes } from "node:crypto";
import type { SnapshotTarget } from "./targets/target.js";

export type WormCheck = { target: string; enforced: boolean; detail: string; checkedAt: string };

export async function runWormSelfTest(target: SnapshotTarget, now = new Date(), retainDays = 1): Promise<WormCheck> {
  const key = `selftest/worm-${now.toISOString().replace(/[-:.]/g, "")}-${randomBytes(3).toString("hex")}`;
  const retainUntil = new Date(now.getTime() + retainDays * 86_400_000);
  const probe = await target.probeDeleteRefusal(key, retainUntil);
  return { target: target.name, enforced: probe.refused, detail: probe.detail, checkedAt: now.toISOString() };
}
