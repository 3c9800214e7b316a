import type { Tx } from "../db/sql.js";
import { REASON_MAX_CHARS, recordPhiEvent, type PhiEvent, type RecordsActor } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import type { SkippedRow } from "./columns.js";

/**
 * The rows a list left out because they do not decrypt (`openRows` in columns.ts): one event,
 * action `<resource>.undecryptable`, outcome `failure`, with the count, the cause and the row ids
 * in `reason` — never a value. Ids beyond the reason's length limit go on in further events of
 * the same action ("continued"), so none is lost. Also one warning log line (ids only).
 */
export async function recordUndecryptable(
  ctx: ApplianceContext,
  t: Tx,
  actor: RecordsActor,
  skipped: SkippedRow[],
  event: { resourceType: PhiEvent["resourceType"]; tenantId: string; patientId?: string | null; breakGlass?: boolean },
  meta: RequestMeta | null,
): Promise<void> {
  if (skipped.length === 0) return;
  const action = `${event.resourceType}.undecryptable`;
  ctx.log.warn("a list left out rows that cannot be decrypted", { action, count: skipped.length, ids: skipped.map((s) => s.id), tenantId: event.tenantId });
  const reasons: string[] = [];
  let reason = `${skipped.length} undecryptable row(s) left out of the list:`;
  for (const s of skipped) {
    const entry = ` ${s.id} ${s.cause}`;
    if (reason.length + entry.length > REASON_MAX_CHARS) {
      reasons.push(reason);
      reason = "continued:";
    }
    reason += entry;
  }
  reasons.push(reason);
  const only = skipped.length === 1 ? skipped[0]!.id : null;
  for (const r of reasons) {
    await recordPhiEvent(
      ctx,
      t,
      actor,
      { ...event, action, resourceId: only, patientId: event.patientId ?? (event.resourceType === "patient" ? only : null), outcome: "failure", reason: r },
      meta,
    );
  }
}
