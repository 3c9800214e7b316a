import { execFileSync, spawnSync } from "node:child_process";
import { createHash, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendAuditEvent, type AuditEventInput } from "../../../daemon/audit/append.js";
import { readChainHead } from "../../../daemon/audit/chainer.js";
import { checkpointMessage } from "../../../daemon/audit/checkpoints.js";
import { AUDITOR_README, VERIFY_SCRIPT } from "../../../daemon/audit/evidence-script.js";
import { exportAuditEvidence, writeEvidencePack, type ExportFormat, type ExportManifest } from "../../../daemon/audit/export.js";
import { auditKeyId, describeCheckpointKeys, publicKeysFromPem, rawPublicKey } from "../../../daemon/audit/signing-key.js";
import { verifyAuditChain } from "../../../daemon/audit/verify.js";
import { inScope } from "../../../daemon/db/sql.js";
import { rotateDataKey } from "../../../daemon/keys/index.js";
import { tempDir } from "../../helpers/appliance.js";
import { auditTestContext, legacyAuditSigningKey, type AuditTestContext } from "./context.js";

let t: AuditTestContext;
let out: string;
const tenantA = "0b7f0a52-3d0e-4a4e-9d1c-6f7e0f3a1a11";
const tenantB = "6c1d8f0e-2b7a-4c55-8e0b-1f2d3c4b5a69";
// Strings every encoder must agree on: quotes, backslashes, newlines, tabs, non-Latin, emoji, U+2028.
const tricky = 'He said "stop" \\ then\nleft\twith 病歴 😷 \u2028 <b>&amp;</b> %s $HOME `x`';

function docsScript(): string {
  const doc = fs.readFileSync(path.resolve("docs/audit-format.md"), "utf8");
  const block = /## Verifying a pack offline[\s\S]*?```sh\n([\s\S]*?)```/.exec(doc);
  if (!block) throw new Error("docs/audit-format.md lost its verification script");
  return block[1]!;
}

async function record(over: Partial<AuditEventInput>) {
  await inScope(t.ctx.db.app, { kind: "appliance" }, (transaction) =>
    appendAuditEvent(t.ctx, transaction, {
      tenantId: tenantA,
      actor: { userId: "u-1", role: "practitioner" },
      action: "patient.read",
      resourceType: "patient",
      resourceId: "p-1",
      patientId: "p-1",
      outcome: "success",
      ...over,
    }),
  );
}

function runDocsScript(dir: string, fingerprint?: string) {
  const script = path.join(out, "verify-from-docs.sh");
  fs.writeFileSync(script, docsScript());
  return spawnSync("sh", [script, ...(fingerprint ? ["--fingerprint", fingerprint] : []), dir], { encoding: "utf8" });
}

/** The fingerprint the console's Audit page and `wardkeep audit fingerprint` show (GET /api/v1/audit/public-key). */
const consoleFingerprint = async () => (await describeCheckpointKeys(t.ctx)).fingerprint;

beforeAll(async () => {
  t = await auditTestContext();
  for (let i = 0; i < 30; i++) {
    await record({
      tenantId: i % 3 === 2 ? tenantB : tenantA,
      reason: i === 4 ? tricky : null,
      userAgent: i === 5 ? tricky : "curl/8",
      actor: { userId: i === 9 ? tricky : `u-${i % 4}`, role: "practitioner", breakGlass: i === 4, impersonatorId: i === 6 ? "support-1" : null },
      outcome: i % 7 === 0 ? "denied" : "success",
      resourceId: i === 8 ? '=HYPERLINK("http://x")' : `p-${i}`,
    });
  }
  out = tempDir("wardkeep-export-");
});
afterAll(async () => {
  await t?.close();
  if (out) fs.rmSync(out, { recursive: true, force: true });
});

describe("evidence packs", () => {
  let manifest: ExportManifest;
  let dir: string;

  it("writes events, checkpoints, key and a signed manifest, and audits the export itself", async () => {
    dir = path.join(out, "pack-all");
    const progress: number[] = [];
    manifest = await exportAuditEvidence(
      t.ctx,
      { tenantId: null, actor: { userId: "auditor-1", role: "super_admin" }, sourceIp: "10.0.0.9", userAgent: null, requestId: "req-1" },
      { from: new Date(Date.now() - 3_600_000), to: new Date(Date.now() + 3_600_000), formats: ["csv", "fhir"], tenantId: null },
      dir,
      (p) => progress.push(p.done),
    );
    const keyFile = `audit-signing-${manifest.publicKey.keyId}.pem`;
    expect(fs.readdirSync(dir).sort()).toEqual(
      ["README.md", "SHA256SUMS", keyFile, "checkpoints.jsonl", "events.csv", "events.fhir.json", "events.jsonl", "manifest.json", "manifest.sig", "verify.sh"].sort(),
    );
    // Only the keyring's key signed anything yet: one key, which also signed the manifest.
    expect(manifest.keys).toEqual([{ keyId: manifest.publicKey.keyId, keyringVersion: 1, legacy: false, file: keyFile }]);
    // 30 events plus the audit.export event recorded before the pack was written.
    expect(manifest.events).toEqual({ total: 31, included: 31, redacted: 0 });
    expect(progress.at(-1)).toBe(31);
    const lines = fs
      .readFileSync(path.join(dir, "events.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.at(-1)).toMatchObject({ action: "audit.export", actor_user_id: "auditor-1", outcome: "success" });
    expect(manifest.chainStart).toEqual({ seq: "0", hash: "0".repeat(64) });
    expect(manifest.chainEnd.seq).toBe("31");
  });

  it("recomputes to the appliance's own head with the jq and sha256sum script from the docs", async () => {
    const fingerprint = await consoleFingerprint();
    expect(fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(fingerprint.slice(0, 16)).toBe(manifest.publicKey.keyId);
    // Given in the console's upper-case, colon-separated style too.
    const result = runDocsScript(dir, fingerprint.toUpperCase().replace(/(..)(?!$)/g, "$1:"));
    if (process.env.DEBUG_SH) console.log(result.stdout, result.stderr, dir);
    const report = await verifyAuditChain(t.ctx);
    expect(result.stderr).toBe("");
    expect(result.stdout.trim()).toBe(`intact up to seq 31, head ${manifest.chainEnd.hash}`);
    // PostgreSQL's check of the copied columns agrees with JavaScript's encoding of odd strings.
    expect(report.summary).toBe(`intact up to seq ${report.lastGoodSeq}, head ${report.head}`);
    expect(manifest.chainEnd.hash).toBe((await verifyAuditChainHeadAt(31))!);
  });

  it("ships the same script in the pack as in the docs", () => {
    expect(fs.readFileSync(path.join(dir, "verify.sh"), "utf8")).toBe(docsScript());
    expect(VERIFY_SCRIPT).toBe(docsScript());
  });

  it("ships a README for auditors, signed like every file, that names the fingerprint step and the failures", () => {
    const readme = fs.readFileSync(path.join(dir, "README.md"), "utf8");
    expect(readme).toBe(AUDITOR_README);
    expect(manifest.files.map((f) => f.name)).toContain("README.md");
    expect(fs.readFileSync(path.join(dir, "SHA256SUMS"), "utf8")).toMatch(/ {2}README\.md\n/);
    expect(readme).toContain("Obtain the signing key's fingerprint from the appliance, not from this pack");
    expect(readme).toContain("wardkeep audit fingerprint");
    expect(readme).toContain("sh verify.sh --fingerprint <the 64 hex digits from step 1> .");
    expect(readme).toContain("BROKEN: the pack is signed by key X, not by the appliance key Y you obtained");
  });

  it("without --fingerprint warns on stderr that the key was not checked; a missing value is a usage error", async () => {
    const plain = runDocsScript(dir);
    expect(plain.status).toBe(0);
    expect(plain.stderr.trim()).toBe(
      `WARNING: signing key ${await consoleFingerprint()} not checked against the appliance's fingerprint (run: sh verify.sh --fingerprint HEX, HEX from the console's Audit page or wardkeep audit fingerprint)`,
    );
    const usage = spawnSync("sh", [path.join(dir, "verify.sh"), "--fingerprint"], { encoding: "utf8" });
    expect(usage.status).toBe(2);
    expect(usage.stdout.trim()).toBe("usage: sh verify.sh [--fingerprint HEX] [PACK_DIR]");
  });

  it("fails a pack re-signed with another key against the console's fingerprint, with one clear line", async () => {
    const copy = path.join(out, "pack-swapped");
    fs.cpSync(dir, copy, { recursive: true });
    const evil = generateKeyPairSync("ed25519");
    const evilFingerprint = createHash("sha256").update(rawPublicKey(evil.publicKey)).digest("hex");
    const keyFile = path.join(copy, manifest.publicKey.file);
    fs.writeFileSync(keyFile, evil.publicKey.export({ format: "pem", type: "spki" }) as string);
    // Every checkpoint re-signed with the other key, then every digest and the manifest redone:
    // the pack is self-consistent again.
    const cps = fs
      .readFileSync(path.join(copy, "checkpoints.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { message: string; signature: string });
    fs.writeFileSync(
      path.join(copy, "checkpoints.jsonl"),
      cps.map((c) => JSON.stringify({ ...c, signature: sign(null, Buffer.from(c.message), evil.privateKey).toString("base64") })).join("\n") + "\n",
    );
    const digest = (f: string) =>
      createHash("sha256")
        .update(fs.readFileSync(path.join(copy, f)))
        .digest("hex");
    const listed = fs
      .readFileSync(path.join(copy, "SHA256SUMS"), "utf8")
      .trim()
      .split("\n")
      .map((l) => l.slice(66));
    fs.writeFileSync(path.join(copy, "SHA256SUMS"), listed.map((f) => `${digest(f)}  ${f}\n`).join(""));
    const forged = { ...manifest, files: manifest.files.map((f) => ({ ...f, sha256: digest(f.name), bytes: fs.statSync(path.join(copy, f.name)).size })) };
    const forgedBytes = Buffer.from(JSON.stringify(forged, null, 2) + "\n");
    fs.writeFileSync(path.join(copy, "manifest.json"), forgedBytes);
    fs.writeFileSync(path.join(copy, "manifest.sig"), sign(null, forgedBytes, evil.privateKey));

    // Checked only against the key it ships, the forged pack passes: that is why the fingerprint step exists.
    const selfCheck = runDocsScript(copy);
    expect(selfCheck.stdout.trim()).toBe(`intact up to seq 31, head ${manifest.chainEnd.hash}`);
    expect(selfCheck.stderr).toContain(`WARNING: signing key ${evilFingerprint} not checked`);

    const fingerprint = await consoleFingerprint();
    const r = runDocsScript(copy, fingerprint);
    expect(r.status).toBe(1);
    expect(r.stdout.trim()).toBe(`BROKEN: the pack is signed by key ${evilFingerprint}, not by the appliance key ${fingerprint} you obtained: do not trust this pack`);
    // The genuine pack still verifies against the same fingerprint.
    expect(runDocsScript(dir, fingerprint).status).toBe(0);
  });

  it("names the seq of an event edited in the exported file", () => {
    const copy = path.join(out, "pack-edited");
    fs.cpSync(dir, copy, { recursive: true });
    const file = path.join(copy, "events.jsonl");
    const lines = fs.readFileSync(file, "utf8").split("\n");
    lines[11] = lines[11]!.replace('"outcome":"success"', '"outcome":"denied"').replace('"outcome":"denied"', '"outcome":"failure"');
    fs.writeFileSync(file, lines.join("\n"));
    // Re-sign nothing: first the digest check fails; with SHA256SUMS forged too, the chain check names the seq.
    expect(runDocsScript(copy).stdout).toContain("BROKEN: a file differs from SHA256SUMS");
    const sums = fs.readFileSync(path.join(copy, "SHA256SUMS"), "utf8");
    const digest = execFileSync("sha256sum", [file], { encoding: "utf8" }).slice(0, 64);
    fs.writeFileSync(path.join(copy, "SHA256SUMS"), sums.replace(/^[0-9a-f]{64}(  events\.jsonl)$/m, `${digest}$1`));
    expect(runDocsScript(copy).stdout).toContain("BROKEN: events.jsonl is not in the signed manifest");
    const manifestFile = path.join(copy, "manifest.json");
    const m = JSON.parse(fs.readFileSync(manifestFile, "utf8")) as ExportManifest;
    m.files.find((f) => f.name === "events.jsonl")!.sha256 = digest;
    fs.writeFileSync(manifestFile, JSON.stringify(m, null, 2) + "\n");
    expect(runDocsScript(copy).stdout).toContain("BROKEN: manifest.json signature");
  });

  it("names the seq when the events file is changed and the pack's signature checks are bypassed", () => {
    const copy = path.join(out, "pack-chain");
    fs.cpSync(dir, copy, { recursive: true });
    const file = path.join(copy, "events.jsonl");
    const lines = fs.readFileSync(file, "utf8").split("\n");
    lines[11] = lines[11]!.replace('"actor_role":"practitioner"', '"actor_role":"admin"');
    fs.writeFileSync(file, lines.join("\n"));
    // Only the chain part of the script: skip section 1 (digests and manifest signature).
    const chainOnly = docsScript().replace(/# 1\.[\s\S]*?# 2\./, "# 2.");
    const script = path.join(copy, "chain-only.sh");
    fs.writeFileSync(script, chainOnly);
    const r = spawnSync("sh", [script, copy], { encoding: "utf8" });
    if (process.env.DEBUG_SH) console.log(r.stdout, r.stderr);
    expect(r.stdout).toContain("BROKEN at seq 12: the event does not match its hash (changed)");
  });

  it("writes CSV with a library, defusing spreadsheet formulas, and FHIR R4 AuditEvents", () => {
    const csv = fs.readFileSync(path.join(dir, "events.csv"), "utf8");
    expect(csv.split("\n")[0]).toBe(
      "seq,recorded_at,occurred_at,tenant_id,actor_user_id,actor_role,impersonator_id,break_glass,action,resource_type,resource_id,patient_id,outcome,source_ip,user_agent,request_id,reason,prev_hash,hash",
    );
    expect(csv).toContain(`"'=HYPERLINK(""http://x"")"`);
    expect(csv).toContain('"He said ""stop"" \\ then\nleft');
    const bundle = JSON.parse(fs.readFileSync(path.join(dir, "events.fhir.json"), "utf8"));
    expect(bundle).toMatchObject({ resourceType: "Bundle", type: "collection" });
    expect(bundle.entry).toHaveLength(31);
    const bg = bundle.entry[4].resource;
    expect(bg).toMatchObject({ resourceType: "AuditEvent", action: "R", outcome: "0" });
    expect(bg.agent[0].purposeOfUse[0].coding[0].code).toBe("BTG");
    expect(bg.agent[0].purposeOfUse[0].text).toBe(tricky);
    expect(bg.entity[1].what.reference).toBe("Patient/p-1");
    expect(bundle.entry[0].resource.outcome).toBe("4");
    expect(bundle.entry[6].resource.agent[1].who.identifier.value).toBe("support-1");
  });

  it("gives a tenant's export only its own events, with the others redacted but still chained", async () => {
    const tdir = path.join(out, "pack-tenant");
    const m = await writeEvidencePack(t.ctx, { from: new Date(Date.now() - 3_600_000), to: new Date(Date.now() + 3_600_000), formats: ["jsonl"], tenantId: tenantB }, tdir);
    const lines = fs
      .readFileSync(path.join(tdir, "events.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(m.events.included).toBe(10);
    expect(lines.filter((l) => l.redacted)).toHaveLength(m.events.redacted);
    expect(lines.filter((l) => !l.redacted).every((l) => l.tenant_id === tenantB)).toBe(true);
    expect(fs.readFileSync(path.join(tdir, "events.jsonl"), "utf8")).not.toContain(tenantA);
    expect(runDocsScript(tdir).stdout.trim()).toBe(`intact up to seq ${m.chainEnd.seq}, head ${m.chainEnd.hash}`);
  });

  it("refuses an empty range and a directory that is not empty", async () => {
    await expect(writeEvidencePack(t.ctx, { from: new Date(), to: new Date(Date.now() - 1), formats: [], tenantId: null }, path.join(out, "x"))).rejects.toThrow(/range is empty/);
    await expect(writeEvidencePack(t.ctx, { from: new Date(0), to: new Date(), formats: [], tenantId: null }, dir)).rejects.toThrow(/not empty/);
  });
});

describe("evidence packs and signing keys", () => {
  const range = () => ({ from: new Date(Date.now() - 3_600_000), to: new Date(Date.now() + 3_600_000), formats: [] as ExportFormat[], tenantId: null });
  const packKeys = (d: string, m: ExportManifest) => m.keys.flatMap((k) => publicKeysFromPem(fs.readFileSync(path.join(d, k.file), "utf8")));

  it("ships every key its checkpoints were signed with — before and after a rotation, and the legacy key — and verifies offline", async () => {
    await insertCheckpoint(3, legacyAuditSigningKey(t.ctx));
    const rotated = await rotateDataKey(t.ctx, "audit-signing");
    const pdir = path.join(out, "pack-rotated");
    const m = await writeEvidencePack(t.ctx, range(), pdir);
    const byOrigin = (v: number | null) => m.keys.find((k) => k.keyringVersion === v);
    expect(m.keys).toHaveLength(3);
    expect(byOrigin(rotated.from)).toMatchObject({ legacy: false });
    expect(byOrigin(rotated.to)).toMatchObject({ legacy: false, keyId: m.publicKey.keyId });
    expect(byOrigin(null)).toMatchObject({ legacy: true });
    for (const k of m.keys) expect(fs.existsSync(path.join(pdir, k.file))).toBe(true);
    // The console now shows the rotated-in key, which signed this pack's manifest.
    const r = runDocsScript(pdir, await consoleFingerprint());
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe(`intact up to seq ${m.chainEnd.seq}, head ${m.chainEnd.hash}`);
    // `wardkeep audit verify --public-key` with the pack's key files: every checkpoint verifies.
    const report = await verifyAuditChain(t.ctx, { publicKeys: packKeys(pdir, m) });
    expect(report).toMatchObject({ intact: true, keyTrust: "given" });
    expect(report.checkpoints.verified).toBe(report.checkpoints.total);
  });

  it("reports a checkpoint signed with a foreign key as broken at its seq, offline and on the appliance", async () => {
    const foreign = generateKeyPairSync("ed25519");
    const foreignId = auditKeyId(rawPublicKey(foreign.publicKey));
    await insertCheckpoint(20, foreign);
    const pdir = path.join(out, "pack-forged");
    const m = await writeEvidencePack(t.ctx, range(), pdir);
    expect(m.keys.map((k) => k.keyId)).not.toContain(foreignId);
    expect(runDocsScript(pdir).stdout.trim()).toBe(`BROKEN at seq 20: checkpoint signed by unknown key ${foreignId}`);
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "20", reason: "bad-checkpoint-signature" });
    expect(report.lastGoodSeq).toBe("19");
  });
});

/** A checkpoint at `seq` signed with `key`, stored as the app role may (INSERT only). */
async function insertCheckpoint(seq: number, key: { privateKey: KeyObject; publicKey: KeyObject }) {
  const raw = rawPublicKey(key.publicKey);
  const [row] = await inScope(t.ctx.db.app, { kind: "appliance" }, (transaction) =>
    transaction.rows<{ h: string }>("SELECT encode(hash, 'hex') AS h FROM audit_events WHERE seq = $1", [seq]),
  );
  const c = { seq: String(seq), headHash: row!.h, signedAt: new Date().toISOString(), keyId: auditKeyId(raw) };
  await t.ctx.db.app.exec(
    "INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, public_key, signature, purpose) VALUES ($1, decode($2, 'hex'), $3, $4, $5, $6, 'manual')",
    [c.seq, c.headHash, c.signedAt, c.keyId, raw, sign(null, Buffer.from(checkpointMessage(c)), key.privateKey)],
  );
}

async function verifyAuditChainHeadAt(seq: number): Promise<string | undefined> {
  const head = await readChainHead(t.ctx);
  const rows = await t.ctx.db.owner.rows<{ h: string }>("SELECT encode(hash, 'hex') AS h FROM audit_events WHERE seq = $1", [seq]);
  return (rows as unknown as { h: string }[])[0]?.h ?? (head.seq === String(seq) ? head.hash : undefined);
}
