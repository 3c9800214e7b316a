import fs from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAppliance } from "../../../daemon/appliance.js";
import { runBaseBackup, shipSpool } from "../../../daemon/backups/pitr.js";
import { backupJobs } from "../../../daemon/backups/background.js";
import { listPitrDrills, runPitrDrill, type PitrDrillRecord } from "../../../daemon/backups/pitr-drill.js";
import { checkpointHead } from "../../../daemon/audit/checkpoints.js";
import { runJobNow } from "../../../daemon/jobs/runner.js";
import { writePolicy } from "../../../daemon/backups/policy.js";
import { openAlerts, runSnapshot } from "../../../daemon/backups/service.js";
import { systemClock } from "../../../daemon/clock.js";
import { loadConfig } from "../../../daemon/config/load.js";
import { inScope } from "../../../daemon/db/sql.js";
import { issueRecoveryKit } from "../../../daemon/keys/recovery.js";
import { createLogger } from "../../../daemon/log/logger.js";
import { purgeDueDeletions } from "../../../daemon/records/data-rights/deletion.js";
import { parseSegment, segmentName, walLayout } from "../../../backup/wal.js";
import type { TestAppliance } from "../../helpers/appliance.js";
import { signIn, signInWithPassword, type SignedIn } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { parsePoint } from "../../../daemon/cli/commands/recover.js";
import { CliError } from "../../../daemon/cli/output.js";
import { runCli, spawnDaemon } from "../../helpers/daemon-process.js";
import { freePort } from "../../helpers/postgres.js";
import { openClinic, registerPatient, type Clinic } from "../records/helpers.js";
import { tempDir } from "./helpers.js";

/**
 * Point-in-time recovery end to end, on the embedded PostgreSQL with continuous archiving: appliance
 * A takes a base backup, then patients are written at known times; a target outage makes the spool
 * hold the WAL until the target is back; a patient is crypto-shredded after the chosen point. A
 * brand-new appliance recovered with `wardkeep recover --at <point>` and the kit alone serves
 * exactly the patients written before the point, through its API, and not the shredded one.
 */
const DAY = 86_400_000;
const clock = new TestClock();
let dir: string;
let a: TestAppliance & { stop(): Promise<void> };
let superUrl: string;
let clinic: Clinic;
let kit: string;
let targetFile: string;
let nas: string;
let desk: { email: string; password: string; totpSecret: string | null };
let auditor: { email: string; password: string; totpSecret: string | null };
const ids: Record<"early" | "before" | "after" | "rightAfter" | "shredded", string> = { early: "", before: "", after: "", rightAfter: "", shredded: "" };
/** The audit event that registered "Right After" (`--before-event`), and the clinic's chain as appliance A left it. */
let eventSeq: string;
let tenantChain: { seq: string; eventId: string; hash: string }[];
let checkpointSeq: string;
let drills: {
  job: { status: string; error: string | null; counts: Record<string, number> | null };
  passed: PitrDrillRecord;
  failed: PitrDrillRecord;
  gone: string;
  alert: string | undefined;
  window: { from: number; to: number };
  api: { status: number; body: PitrDrillRecord[]; refused: number; refusedType: string | undefined };
};
let point: Date;
let baseStartWal: string;
let outage: { spoolAfter: string[]; failed: string[]; waitingDuring: number; alertDuring: boolean; alertAfter: boolean; waitingAfter: number };

function embeddedEnv(dataDir: string, port: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    WARDKEEP_DATA_DIR: dataDir,
    WARDKEEP_DATABASE_EMBEDDED_PORT: String(port),
    WARDKEEP_PORT: "0",
    WARDKEEP_SERVER_REDIRECT_PORT: "0",
    WARDKEEP_SERVER_HOST: "127.0.0.1",
    WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
    // The test ships by hand (shipSpool) so it knows when each segment left.
    WARDKEEP_BACKUP_WAL_SHIP_INTERVAL_MS: "60000",
    ...extra,
  };
}

async function startEmbedded(dataDir: string, port: number) {
  const config = loadConfig({ env: embeddedEnv(dataDir, port, { WARDKEEP_RECORDS_DELETION_GRACE_DAYS: "1" }) });
  const logLines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _e, cb) {
      logLines.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  const app = await startAppliance(config, { log: createLogger({ level: "debug", stream }), clock, announce: () => {} });
  const caPem = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
  return Object.assign(app, { config, dataDir, caPem, logLines, baseUrl: `https://localhost:${app.server.port}` }) as unknown as TestAppliance & { stop(): Promise<void> };
}

async function sql<T extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: superUrl });
  await c.connect();
  try {
    return (await c.query<T>(text, params)).rows;
  } finally {
    await c.end();
  }
}

/** Closes the current segment and waits until the archiver has put it in the spool. */
async function switchAndArchive(): Promise<string> {
  const [{ wal }] = (await sql<{ wal: string }>("SELECT pg_walfile_name(pg_switch_wal()) AS wal")) as [{ wal: string }];
  for (let i = 0; i < 200; i++) {
    const [s] = await sql<{ last: string | null }>("SELECT last_archived_wal AS last FROM pg_stat_archiver");
    if (s?.last && s.last >= wal) return wal;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`segment ${wal} was not archived`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  dir = tempDir("wardkeep-pitr-");
  fs.chmodSync(dir, 0o711);
  const dataDir = path.join(dir, "a");
  a = await startEmbedded(dataDir, await freePort());
  superUrl = `postgres://postgres:${encodeURIComponent(fs.readFileSync(path.join(dataDir, "secrets", "pg-superuser-password"), "utf8").trim())}@127.0.0.1:${a.config.database.embeddedPort}/wardkeep`;
  nas = path.join(dir, "nas");
  const target = { kind: "fs" as const, name: "nas", path: nas };
  await inScope(a.ctx.db.app, { kind: "appliance" }, (t) => writePolicy(a.ctx, t, { targets: [target] }, null));
  kit = path.join(dir, "kit.pem");
  await issueRecoveryKit(a.ctx, { out: kit });
  targetFile = path.join(dir, "nas.json");
  fs.writeFileSync(targetFile, JSON.stringify(target));

  clinic = await openClinic(a, "PITR Clinic");
  desk = { email: clinic.frontDesk.user.email, password: clinic.frontDesk.password, totpSecret: clinic.frontDesk.totpSecret };
  auditor = { email: clinic.auditor.user.email, password: clinic.auditor.password, totpSecret: clinic.auditor.totpSecret };
  ids.early = (await registerPatient(clinic, { name: "Early Patient" })).id;
  ids.shredded = (await registerPatient(clinic, { name: "Shredded Later" })).id;
  const snap = await runSnapshot(a.ctx, { trigger: "manual" });
  expect(snap.status, snap.error ?? "").toBe("complete");
  // Signed before the base backup, so every time a drill may pick has it in its chain.
  checkpointSeq = (await checkpointHead(a.ctx, "manual")).seq;
  const base = await runBaseBackup(a.ctx, "manual");
  expect(base.status, JSON.stringify(base.outcomes)).toBe("complete");
  baseStartWal = base.body.startWal;

  // The target goes away: the spool keeps every segment and the alert names the target.
  fs.renameSync(nas, `${nas}.away`);
  fs.writeFileSync(nas, "not a directory");
  ids.before = (await registerPatient(clinic, { name: "Before Point" })).id;
  await switchAndArchive();
  const during = await shipSpool(a.ctx);
  const alertsDuring = await openAlerts(a.ctx);

  await sleep(1200);
  point = new Date();
  await sleep(1200);
  ids.after = (await registerPatient(clinic, { name: "After Point" })).id;
  // Registered milliseconds later, with no pause: `--before-event` on its event keeps "After
  // Point". The event's time comes from the appliance clock, which runs in real time in production.
  clock.set(new Date());
  ids.rightAfter = (await registerPatient(clinic, { name: "Right After" })).id;
  for (let i = 0; !eventSeq && i < 200; i++) {
    const [row] = await sql<{ seq: string | null }>(
      "SELECT min(seq)::text AS seq FROM audit_events WHERE (canonical::jsonb)->>'patient_id' = $1 OR (canonical::jsonb)->>'resource_id' = $1",
      [ids.rightAfter],
    );
    if (row?.seq) eventSeq = row.seq;
    else await sleep(50);
  }

  // Erased and crypto-shredded after the point: the newest key-store backup lists it.
  const erase = await clinic.owner.agent.delete(`/api/v1/patients/${ids.shredded}`);
  expect(erase.status, JSON.stringify(erase.body)).toBe(202);
  clock.advance(2 * DAY);
  expect(await purgeDueDeletions(a.ctx)).toContainEqual(expect.objectContaining({ patientId: ids.shredded, result: "purged" }));
  await switchAndArchive();

  // Back: the next pass drains the spool and clears the alert.
  fs.rmSync(nas);
  fs.renameSync(`${nas}.away`, nas);
  const after = await shipSpool(a.ctx);
  const snap2 = await runSnapshot(a.ctx, { trigger: "manual" });
  expect(snap2.status, snap2.error ?? "").toBe("complete");
  await switchAndArchive();
  await shipSpool(a.ctx);
  const spoolAfter = fs.readdirSync(path.join(dataDir, "wal-spool")).filter((n) => !n.startsWith("."));
  outage = {
    spoolAfter,
    failed: during.failed.map((f) => f.target),
    waitingDuring: during.waiting,
    alertDuring: alertsDuring.some((x) => x.kind === "wal_ship_failed" && x.subject === "nas"),
    alertAfter: (await openAlerts(a.ctx)).some((x) => x.kind === "wal_ship_failed"),
    waitingAfter: after.waiting,
  };
  // A PITR drill through the job runner (a random time in the window), then the same drill to the
  // point after a segment it needs was deleted from the target (put back afterwards).
  const job = await runJobNow(
    a.ctx,
    backupJobs.find((j) => j.name === "pitr-drill")!,
    null,
  );
  await job.done;
  const [jobRun] = await sql<{ status: string; error: string | null; counts: Record<string, number> | null }>(
    "SELECT outcome AS status, error, counts FROM job_runs WHERE id::text = $1",
    [job.runId],
  );
  const [passed] = await listPitrDrills(a.ctx, 1);
  const { timeline: tl, segno: sn } = parseSegment(baseStartWal);
  const gone = segmentName(tl, sn + 1n);
  const goneFile = path.join(nas, walLayout.object(gone));
  const saved = fs.readFileSync(goneFile);
  fs.rmSync(goneFile);
  const failed = await runPitrDrill(a.ctx, { trigger: "manual", target: "nas", at: point });
  const alert = (await openAlerts(a.ctx)).find((x) => x.kind === "pitr_drill_failed" && x.subject === "nas")?.detail;
  fs.writeFileSync(goneFile, saved);
  // The same two drills through the API the console's PITR panel reads, and a tenant's admin refused.
  const operator = await signIn(a, { role: "super_admin" });
  const listed = await operator.agent.get("/api/v1/backups/pitr/drills");
  const refused = await (await signIn(a, { role: "admin" })).agent.get("/api/v1/backups/pitr/drills");
  drills = {
    job: jobRun!,
    passed: passed!,
    failed,
    gone,
    alert,
    api: { status: listed.status, body: listed.body as PitrDrillRecord[], refused: refused.status, refusedType: (refused.body as { type?: string }).type },
    window: { from: Date.parse(base.body.completedAt), to: Date.now() },
  };
  tenantChain = (
    await sql<{ seq: string; canonical: string; hash: string }>(
      "SELECT seq::text AS seq, canonical, encode(hash, 'hex') AS hash FROM audit_events WHERE tenant_id = $1 ORDER BY seq",
      [clinic.tenant.id],
    )
  ).map((r) => ({ seq: r.seq, eventId: (JSON.parse(r.canonical) as { event_id: string }).event_id, hash: r.hash }));
  await a.stop();
}, 240_000);

afterAll(async () => {
  await a?.stop().catch(() => {});
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function signInTo(dataDir: string, daemon: ReturnType<typeof spawnDaemon>, who: typeof desk): Promise<SignedIn> {
  const port = await daemon.port();
  const caPem = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
  const b = { baseUrl: `https://localhost:${port}`, caPem, ctx: { clock: systemClock } } as unknown as TestAppliance;
  return signInWithPassword(b, who);
}

async function recoverInto(extra: string[], from = targetFile) {
  const dataDir = tempDir("wardkeep-pitr-b-");
  fs.chmodSync(dataDir, 0o711);
  const env = embeddedEnv(dataDir, await freePort());
  const r = await runCli(["recover", "--json", "--target-file", from, "--recovery-key", kit, "--unseal", "keyfile", ...extra], env);
  return { dataDir, env, r };
}

describe("continuous archiving through a target outage", () => {
  it("keeps the segments in the spool with an alert naming the target, then drains it with none missing", async () => {
    expect(outage.failed).toEqual(["nas"]);
    expect(outage.waitingDuring).toBeGreaterThan(0);
    expect(outage.alertDuring).toBe(true);
    expect(outage.waitingAfter).toBe(0);
    expect(outage.alertAfter).toBe(false);
    expect(outage.spoolAfter).toEqual([]);
    // Every segment from the base backup's first one to the newest is on the target.
    const names = fs
      .readdirSync(path.join(nas, "wal"))
      .map((f) => f.replace(/\.wkw$/, ""))
      .filter((n) => /^[0-9A-F]{24}$/.test(n))
      .sort();
    const { timeline, segno } = parseSegment(baseStartWal);
    const last = parseSegment(names.at(-1)!).segno;
    const expected: string[] = [];
    for (let s = segno; s <= last; s++) expected.push(segmentName(timeline, s));
    expect(names.filter((n) => n >= baseStartWal)).toEqual(expected);
  });
});

describe("wardkeep recover --at", () => {
  it("lists what it would fetch in a dry run, and writes nothing", async () => {
    const { dataDir, r } = await recoverInto(["--at", point.toISOString(), "--dry-run"]);
    try {
      expect(r.code, r.stderr).toBe(0);
      const plan = JSON.parse(r.stdout).plan;
      expect(plan.baseBackup.startWal).toBe(baseStartWal);
      expect(plan.wal[0].name).toBe(baseStartWal);
      expect(plan.missing).toEqual([]);
      expect(fs.existsSync(path.join(dataDir, "pg"))).toBe(false);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("restores a fresh appliance to the point: exactly the writes before it, read through its API, and not the patient shredded later", async () => {
    const { dataDir, env, r } = await recoverInto(["--at", point.toISOString()]);
    let daemon: ReturnType<typeof spawnDaemon> | undefined;
    try {
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const out = JSON.parse(r.stdout).recovery;
      expect(out.auditChain.intact).toBe(true);
      expect(out.keyStore.shreddedSubjects).toBe(1);
      expect(out.purged.patients).toBe(1);
      expect(Date.parse(out.recoveredTo)).toBeLessThan(point.getTime());
      expect(r.stdout).not.toMatch(/Before Point|After Point|Early Patient/);

      daemon = spawnDaemon(env);
      const port = await daemon.port();
      const caPem = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
      const b = { baseUrl: `https://localhost:${port}`, caPem, ctx: { clock: systemClock } } as unknown as TestAppliance;
      const frontDesk: SignedIn = await signInWithPassword(b, desk);
      const before = await frontDesk.agent.get(`/api/v1/patients/${ids.before}`);
      expect(before.status, JSON.stringify(before.body)).toBe(200);
      expect(before.body.name).toBe("Before Point");
      const early = await frontDesk.agent.get(`/api/v1/patients/${ids.early}`);
      expect(early.body.name).toBe("Early Patient");
      expect((await frontDesk.agent.get(`/api/v1/patients/${ids.after}`)).status).toBe(404);
      expect((await frontDesk.agent.get(`/api/v1/patients/${ids.shredded}`)).status).toBe(404);
      const list = await frontDesk.agent.get("/api/v1/patients");
      expect(list.status).toBe(200);
      expect(list.body.items.map((p: { name: string }) => p.name).sort()).toEqual(["Before Point", "Early Patient"]);
    } finally {
      await daemon?.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 180_000);

  it("fails naming the segment when one on the target was tampered with, and leaves no half-restored database", async () => {
    const copy = path.join(dir, "tampered");
    fs.cpSync(nas, copy, { recursive: true });
    const file = path.join(copy, walLayout.object(baseStartWal));
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 20]! ^= 0x01;
    fs.writeFileSync(file, bytes);
    const tf = path.join(dir, "tampered.json");
    fs.writeFileSync(tf, JSON.stringify({ kind: "fs", name: "nas", path: copy }));
    const { dataDir, r } = await recoverInto(["--at", point.toISOString()], tf);
    try {
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout).error).toContain(`WAL file ${baseStartWal}: the encrypted data does not authenticate`);
      expect(fs.existsSync(path.join(dataDir, "pg"))).toBe(false);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  it("fails naming the segment when one is missing from the target", async () => {
    const copy = path.join(dir, "gap");
    fs.cpSync(nas, copy, { recursive: true });
    const { timeline, segno } = parseSegment(baseStartWal);
    const gone = segmentName(timeline, segno + 1n);
    fs.rmSync(path.join(copy, walLayout.object(gone)));
    const tf = path.join(dir, "gap.json");
    fs.writeFileSync(tf, JSON.stringify({ kind: "fs", name: "nas", path: copy }));
    const dry = await recoverInto(["--at", point.toISOString(), "--dry-run"], tf);
    expect(dry.r.code).toBe(3);
    expect(JSON.parse(dry.r.stdout).plan.missing).toEqual([gone]);
    fs.rmSync(dry.dataDir, { recursive: true, force: true });
    const { dataDir, r } = await recoverInto(["--at", point.toISOString()], tf);
    try {
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout).error).toContain(`WAL segment ${gone} is missing from target nas`);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  it("states the archive's newest time by the database's clock, and refuses in one line a time after it or in the future", async () => {
    const newest = fs
      .readdirSync(path.join(nas, "wal"))
      .map((f) => f.replace(/\.wkw$/, ""))
      .filter((n) => /^[0-9A-F]{24}$/.test(n))
      .sort()
      .at(-1);
    const dry = await recoverInto(["--at", point.toISOString(), "--dry-run"]);
    fs.rmSync(dry.dataDir, { recursive: true, force: true });
    expect(dry.r.code, dry.r.stderr).toBe(0);
    const archive = JSON.parse(dry.r.stdout).plan.archive as { newestWal: string; archivedAt: string };
    expect(archive.newestWal).toBe(newest);
    // Archived on this host (the database's clock) after the point and before now.
    expect(Date.parse(archive.archivedAt)).toBeGreaterThan(point.getTime());
    expect(Date.parse(archive.archivedAt)).toBeLessThan(Date.now());

    // After the newest archived WAL (a clock ahead of the database's, or a time read in the wrong zone): refused before any download.
    const late = new Date(Date.parse(archive.archivedAt) + 1000);
    const after = await recoverInto(["--at", late.toISOString()]);
    try {
      expect(after.r.code).toBe(1);
      const error = JSON.parse(after.r.stdout).error as string;
      expect(error).toContain(
        `--at ${late.toISOString()} is after the newest WAL on target nas (${newest}, archived ${archive.archivedAt} by the database's clock; this machine's clock says `,
      );
      expect(error).toMatch(/\): nothing was archived for that time; give an earlier time or --at latest$/);
      expect(error).not.toContain("\n");
      expect(fs.existsSync(path.join(after.dataDir, "pg"))).toBe(false);
    } finally {
      fs.rmSync(after.dataDir, { recursive: true, force: true });
    }

    // The same wall-clock time written in another zone: an hour ahead of UTC read as UTC is in the future.
    const ahead = new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d+Z$/, "Z");
    expect(() => parsePoint({ at: ahead })).toThrow(/^--at \S+ \(\S+\) is in the future: this machine's clock says \S+; give the time with its zone offset, or --at latest/);
    // With its offset, the same instant is accepted.
    const local = new Date(Date.now() - 60_000);
    const offset = new Date(local.getTime() + 2 * 3_600_000).toISOString().replace(/\.\d+Z$/, "+02:00");
    expect(parsePoint({ at: offset })).toEqual({ kind: "time", at: new Date(Math.floor(local.getTime() / 1000) * 1000) });
  }, 120_000);
});

describe("wardkeep recover --before-event", () => {
  it("refuses a sequence number that is not one, or one given with --at, in one line", () => {
    expect(() => parsePoint({ beforeEvent: "12abc" })).toThrow(new CliError('--before-event must be an audit sequence number (1, 2, ...), not "12abc"'));
    expect(() => parsePoint({ beforeEvent: "3", at: "latest" })).toThrow(new CliError("--at and --before-event exclude each other: give one point to recover to"));
    expect(parsePoint({ beforeEvent: "42" })).toEqual({ kind: "event", seq: "42" });
  });

  it("fails naming the chain's newest event when the event is not in the archive, and leaves nothing behind", async () => {
    const { dataDir, r } = await recoverInto(["--before-event", "999999"]);
    try {
      expect(r.code, r.stderr).toBe(1);
      expect(JSON.parse(r.stdout).error).toMatch(/^audit event 999999 is not in the archived WAL on target nas: the newest event chained there is \d+/);
      expect(fs.existsSync(path.join(dataDir, "pg"))).toBe(false);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  it("restores to just before the event's transaction: the event and everything chained after it are absent, everything before present, through the API", async () => {
    expect(eventSeq).toMatch(/^\d+$/);
    const { dataDir, env, r } = await recoverInto(["--before-event", eventSeq]);
    let daemon: ReturnType<typeof spawnDaemon> | undefined;
    try {
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const out = JSON.parse(r.stdout).recovery;
      expect(out.point).toBe(`before audit event ${eventSeq}`);
      expect(out.beforeEvent).toMatchObject({ seq: eventSeq, action: "patient.create", missingBefore: 0 });
      expect(BigInt(out.beforeEvent.chainedThrough)).toBeLessThan(BigInt(eventSeq));
      expect(out.phases.findEventMs).toBeGreaterThan(0);
      expect(out.auditChain.intact).toBe(true);

      daemon = spawnDaemon(env);
      const frontDesk = await signInTo(dataDir, daemon, desk);
      const after = await frontDesk.agent.get(`/api/v1/patients/${ids.after}`);
      expect(after.status, JSON.stringify(after.body)).toBe(200);
      expect(after.body.name).toBe("After Point");
      expect((await frontDesk.agent.get(`/api/v1/patients/${ids.rightAfter}`)).status).toBe(404);
      expect((await frontDesk.agent.get(`/api/v1/patients/${ids.shredded}`)).status).toBe(404);
      const list = await frontDesk.agent.get("/api/v1/patients");
      expect(list.body.items.map((p: { name: string }) => p.name).sort()).toEqual(["After Point", "Before Point", "Early Patient"]);

      // The clinic's audit trail as its auditor reads it: every event numbered below the event is
      // there under its number (and hash, where it was chained before the stop); none from the event on.
      const reader = await signInTo(dataDir, daemon, auditor);
      const res = await reader.agent.get("/api/v1/audit?limit=500");
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const recovered = new Map<string, { seq: string; hash: string }>(res.body.events.map((e: { eventId: string; seq: string; hash: string }) => [e.eventId, e]));
      const beforeIt = tenantChain.filter((e) => BigInt(e.seq) < BigInt(eventSeq));
      const fromIt = tenantChain.filter((e) => BigInt(e.seq) >= BigInt(eventSeq));
      expect(beforeIt.length).toBeGreaterThan(5);
      expect(fromIt.length).toBeGreaterThan(1);
      for (const e of beforeIt) {
        expect(recovered.get(e.eventId)?.seq, `event ${e.seq}`).toBe(e.seq);
        if (BigInt(e.seq) <= BigInt(out.beforeEvent.chainedThrough)) expect(recovered.get(e.eventId)?.hash).toBe(e.hash);
      }
      expect(fromIt.filter((e) => recovered.has(e.eventId))).toEqual([]);
    } finally {
      await daemon?.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 240_000);
});

describe("PITR drills", () => {
  it("a scheduled drill restores a random time in the window into a scratch cluster and passes every check, with its RTO by phase and the recovery point achieved", () => {
    const d = drills.passed;
    expect(drills.job.status, drills.job.error ?? "").toBe("succeeded");
    expect(d.status, d.error ?? JSON.stringify(d.checks)).toBe("passed");
    expect(d.trigger).toBe("manual");
    expect(d.target).toBe("nas");
    const at = Date.parse(d.targetTime!);
    expect(at).toBeGreaterThanOrEqual(drills.window.from);
    expect(at).toBeLessThanOrEqual(drills.window.to);
    expect(Date.parse(d.achievedTime!)).toBeLessThan(at);
    expect(d.checks.map((c) => [c.name, c.ok])).toEqual([
      ["audit chain verifies", true],
      ["matches the signed checkpoint before the time", true],
      ["encrypted columns decrypt", true],
    ]);
    expect(d.checks[1]!.detail).toMatch(new RegExp(`^event ${checkpointSeq} has the hash checkpoint \\d+ signed at`));
    expect(d.checks[2]!.detail).toMatch(/^[1-9]\d* value\(s\) of \d+ encrypted column\(s\) across 1 tenant\(s\) decrypted with key-store backup /);
    expect(d.rtoMs).toBeGreaterThan(0);
    expect(Object.keys(d.phases).sort()).toEqual(["baseMs", "locateMs", "replayMs", "verifyMs"]);
    expect(drills.job.counts?.rtoMs).toBe(d.rtoMs);
    expect(fs.existsSync(path.join(a.dataDir, "pitr-drill"))).toBe(false);
  });

  it("fails naming the segment when one was deleted from the target, and raises pitr_drill_failed for the target", () => {
    const d = drills.failed;
    expect(d.status).toBe("failed");
    expect(d.error).toContain(`WAL segment ${drills.gone} is missing from target nas`);
    expect(d.achievedTime).toBeNull();
    expect(drills.alert).toContain(`PITR drill ${d.id} on target nas failed: WAL segment ${drills.gone} is missing`);
    expect(fs.existsSync(path.join(a.dataDir, "pitr-drill"))).toBe(false);
  });

  it("lists both drills through GET /api/v1/backups/pitr/drills, newest first, as recorded; a tenant's admin gets 403", () => {
    expect(drills.api.status).toBe(200);
    expect(drills.api.body.map((d) => [d.id, d.status, d.target])).toEqual([
      [drills.failed.id, "failed", "nas"],
      [drills.passed.id, "passed", "nas"],
    ]);
    expect(drills.api.body[0]!.error).toContain(`WAL segment ${drills.gone} is missing from target nas`);
    expect(drills.api.body[1]).toEqual(drills.passed);
    expect(drills.api.refused).toBe(403);
    expect(drills.api.refusedType).toBe("urn:wardkeep:problem:forbidden");
  });
});
