/**
 * Grandfather-father-son retention: keep the newest snapshot of each of the last N hours, days,
 * ISO weeks and months (for example 24 hourly, 14 daily, 8 weekly, 12 monthly), and always the
 * newest one. A snapshot kept for any reason is kept. Buckets are in UTC, so the result does not
 * move with daylight saving time.
 */
import { removeUnreferencedAttachments } from "./attachments.js";
import { deleteSnapshot, readManifest, scanTarget } from "./catalog.js";
import type { SnapshotTarget } from "./targets/target.js";

export type RetentionPolicy = { hourly: number; daily: number; weekly: number; monthly: number };

export function snapshotTime(id: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-/.exec(id);
  if (!m) throw new RangeError(`not a snapshot id: ${id}`);
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
}

function isoWeek(d: Date): string {
  // ISO 8601: the week belongs to the year of its Thursday.
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  return `${t.getUTCFullYear()}-W${Math.ceil(((t.getTime() - yearStart) / 86_400_000 + 1) / 7)}`;
}

const buckets: [keyof RetentionPolicy, (d: Date) => string][] = [
  ["hourly", (d) => d.toISOString().slice(0, 13)],
  ["daily", (d) => d.toISOString().slice(0, 10)],
  ["weekly", isoWeek],
  ["monthly", (d) => d.toISOString().slice(0, 7)],
];

export type RetentionPlan = { keep: { id: string; reasons: string[] }[]; prune: string[] };

export function planRetention(ids: string[], policy: RetentionPolicy): RetentionPlan {
  const newestFirst = [...new Set(ids)].sort().reverse();
  const reasons = new Map<string, string[]>(newestFirst.map((id) => [id, []]));
  if (newestFirst[0]) reasons.get(newestFirst[0])!.push("newest");
  for (const [kind, bucketOf] of buckets) {
    const seen = new Set<string>();
    for (const id of newestFirst) {
      if (seen.size >= policy[kind]) break;
      const b = bucketOf(snapshotTime(id));
      if (seen.has(b)) continue;
      seen.add(b);
      reasons.get(id)!.push(`${kind} ${b}`);
    }
  }
  return {
    keep: newestFirst.filter((id) => reasons.get(id)!.length > 0).map((id) => ({ id, reasons: reasons.get(id)! })),
    prune: newestFirst.filter((id) => reasons.get(id)!.length === 0),
  };
}

export type AttachmentSweep = { removed: number; refused: number; skipped?: string };

export type PruneOutcome = { target: string; pruned: string[]; refused: { id: string; error: string }[]; attachments: AttachmentSweep };

/**
 * Attachment objects are shared by every snapshot that references them, so one goes only when no
 * complete snapshot left on the target lists it. A manifest that cannot be read stops the sweep:
 * better an orphan object than a snapshot that lost its attachments.
 */
export async function sweepAttachments(target: SnapshotTarget): Promise<AttachmentSweep> {
  const referenced = new Set<string>();
  for (const id of (await scanTarget(target)).complete) {
    try {
      for (const e of (await readManifest(target, id)).body.attachments?.entries ?? []) referenced.add(e.key);
    } catch (err) {
      return { removed: 0, refused: 0, skipped: `the manifest of ${id} could not be read (${(err as Error).message})` };
    }
  }
  return removeUnreferencedAttachments(target, referenced);
}

/**
 * Deletes what the plan prunes. On a WORM target a snapshot still under retention refuses; that
 * is reported, not fatal, and tried again on the next run.
 */
export async function applyRetention(target: SnapshotTarget, ids: string[], policy: RetentionPolicy): Promise<PruneOutcome> {
  const plan = planRetention(ids, policy);
  const out: PruneOutcome = { target: target.name, pruned: [], refused: [], attachments: { removed: 0, refused: 0 } };
  for (const id of plan.prune) {
    try {
      await deleteSnapshot(target, id);
      out.pruned.push(id);
    } catch (err) {
      out.refused.push({ id, error: (err as Error).message });
    }
  }
  if (out.pruned.length) out.attachments = await sweepAttachments(target);
  return out;
}
