import fs from "node:fs";
import path from "node:path";
import { pack as tarPack } from "tar-stream";
import { z } from "zod";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { inDataDir } from "../config/load.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict, Invalid, NotFound } from "../kernel/errors.js";
import { appendAuditEvent, type AuditRequestContext } from "./append.js";
import { EXPORT_FORMATS, exportAuditEvidence, newPackId, type ExportFormat } from "./export.js";
import { exportRequest } from "./schema.js";

/**
 * `POST /api/v1/audit/exports`: an evidence pack written in the background into
 * `<dataDir>/<audit.exportDir>/<id>`, progress kept in `audit_exports` (any replica can report
 * it), downloaded by the browser as a tar. With several replicas, exportDir should be shared
 * storage; a replica without the files answers 409.
 */
export { exportRequest };

export type ExportJob = {
  id: string;
  status: "running" | "done" | "failed";
  tenantId: string | null;
  from: string;
  to: string;
  formats: ExportFormat[];
  progress: { done: number; total: number | null };
  manifest: unknown;
  error: string | null;
  createdAt: string;
  finishedAt: string | null;
};

const SELECT = `SELECT id, status, tenant_id AS "tenantId", range_from AS "from", range_to AS "to", formats, done_events::int AS done,
  total_events::int AS total, manifest, error, created_at AS "createdAt", finished_at AS "finishedAt" FROM audit_exports`;
type Row = Omit<ExportJob, "progress" | "from" | "to" | "createdAt" | "finishedAt"> & {
  from: Date;
  to: Date;
  createdAt: Date;
  finishedAt: Date | null;
  done: number;
  total: number | null;
};
const toJob = (r: Row): ExportJob => ({
  id: r.id,
  status: r.status,
  tenantId: r.tenantId,
  from: r.from.toISOString(),
  to: r.to.toISOString(),
  formats: r.formats,
  progress: { done: r.done, total: r.total },
  manifest: r.manifest,
  error: r.error,
  createdAt: r.createdAt.toISOString(),
  finishedAt: r.finishedAt?.toISOString() ?? null,
});

function packDir(ctx: ApplianceContext, id: string): string {
  return path.join(inDataDir(ctx.config, ctx.config.audit.exportDir), id);
}

/** Removes a finished pack's files (the retention register's class export_file, after its row is gone). */
export async function removeExportPack(ctx: ApplianceContext, id: string): Promise<void> {
  if (!/^audit-[0-9TZ]+-[0-9a-f]{8}$/.test(id)) throw new Error("an evidence pack id");
  await fs.promises.rm(packDir(ctx, id), { recursive: true, force: true });
}

const running = new Set<Promise<void>>();

/** Waits for this process's background exports (shutdown, tests). */
export async function settleExportJobs(): Promise<void> {
  await Promise.allSettled([...running]);
}

export async function startExportJob(ctx: ApplianceContext, actor: Actor, input: z.infer<typeof exportRequest>, who: AuditRequestContext): Promise<ExportJob> {
  const from = new Date(input.from);
  const to = new Date(input.to);
  if (!(from < to)) throw new Invalid("`from` must be before `to`");
  const id = newPackId(ctx.clock.now());
  const formats = [...new Set(input.formats)].filter((f): f is ExportFormat => EXPORT_FORMATS.includes(f));
  const scope = scopeOf(actor);
  await inScope(ctx.db.app, scope, (t) =>
    t.rows("INSERT INTO audit_exports (id, tenant_id, requested_by, range_from, range_to, formats, status) VALUES ($1, $2, $3, $4, $5, $6, 'running')", [
      id,
      actor.tenantId,
      actor.userId,
      from,
      to,
      formats,
    ]),
  );
  const update = (sql: string, bind: unknown[]) => inScope(ctx.db.app, scope, (t) => t.rows(sql, bind));
  let lastWrite = 0;
  const job = (async () => {
    try {
      // The export event is written (blocking) before any file: exportAuditEvidence does that.
      const manifest = await exportAuditEvidence(ctx, who, { from, to, formats, tenantId: actor.tenantId }, packDir(ctx, id), (p) => {
        const now = Date.now();
        if (now - lastWrite < 500 && p.done !== p.total) return;
        lastWrite = now;
        void update("UPDATE audit_exports SET done_events = $2, total_events = $3 WHERE id = $1", [id, p.done, p.total]).catch(() => undefined);
      });
      await update("UPDATE audit_exports SET status = 'done', done_events = $2, total_events = $2, manifest = $3, finished_at = now() WHERE id = $1", [
        id,
        manifest.events.total,
        JSON.stringify(manifest),
      ]);
    } catch (err) {
      const message = err instanceof Error && "status" in err ? (err as Error).message : "the export failed; see the appliance log";
      ctx.log.error("audit export failed", { exportId: id, error: (err as Error).name });
      await update("UPDATE audit_exports SET status = 'failed', error = $2, finished_at = now() WHERE id = $1", [id, message]).catch(() => undefined);
    }
  })();
  running.add(job);
  void job.finally(() => running.delete(job));
  return getExportJob(ctx, actor, id);
}

export async function getExportJob(ctx: ApplianceContext, actor: Actor, id: string): Promise<ExportJob> {
  const rows = await inScope(ctx.db.app, scopeOf(actor), (t) => t.rows<Row>(`${SELECT} WHERE id = $1`, [id]));
  if (!rows[0]) throw new NotFound("no such export");
  return toJob(rows[0]);
}

export async function listExportJobs(ctx: ApplianceContext, actor: Actor): Promise<ExportJob[]> {
  const rows = await inScope(ctx.db.app, scopeOf(actor), (t) => t.rows<Row>(`${SELECT} ORDER BY created_at DESC LIMIT 100`));
  return rows.map(toJob);
}

/** Streams a finished pack as a tar (files are small in number; each is streamed from disk). */
export async function downloadExport(ctx: ApplianceContext, actor: Actor, id: string, who: AuditRequestContext, out: NodeJS.WritableStream & { setHeader?: unknown }) {
  const job = await getExportJob(ctx, actor, id);
  if (job.status !== "done") throw new Conflict(`the export is ${job.status}; download it when it is done`);
  const dir = packDir(ctx, id);
  if (!fs.existsSync(path.join(dir, "manifest.json"))) throw new Conflict("the pack's files are not on this replica: share audit.exportDir between replicas");
  await inScope(ctx.db.app, scopeOf(actor), (t) =>
    appendAuditEvent(ctx, t, { ...who, tenantId: actor.tenantId, action: "audit.export.download", resourceType: "audit_export", resourceId: id, outcome: "success" }),
  );
  const tar = tarPack();
  const names = fs.readdirSync(dir).sort();
  const feed = (async () => {
    for (const name of names) {
      const file = path.join(dir, name);
      const size = fs.statSync(file).size;
      await new Promise<void>((resolve, reject) => {
        const entry = tar.entry({ name: `${id}/${name}`, size, mode: 0o644, mtime: new Date(job.finishedAt ?? job.createdAt) }, (err) => (err ? reject(err) : resolve()));
        fs.createReadStream(file).on("error", reject).pipe(entry);
      });
    }
    tar.finalize();
  })();
  return { filename: `${id}.tar`, stream: tar, done: feed };
}
