import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sweepStaleUploads } from "../../../daemon/records/attachments/store.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { signIn, type SignedIn } from "../../helpers/actors.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { asSuperuser, assignCareTeam, binary, expectProblem, openClinic, registerPatient, streamRequest, type Clinic, tag } from "./helpers.js";

/** Clinical notes (versions, sign-off), consents (events, in force), attachments (streamed, encrypted). */
const LIMIT = 2 * 1024 * 1024;
let app: TestAppliance;
let clinic: Clinic;
let patientId: string;
let colleague: SignedIn;

beforeAll(async () => {
  app = await startTestAppliance({ env: { WARDKEEP_RECORDS_ATTACHMENT_MAX_BYTES: String(LIMIT), WARDKEEP_RECORDS_ATTACHMENT_SEGMENT_KIB: "64" } });
  clinic = await openClinic(app, "Riverside Cardiology");
  patientId = (await registerPatient(clinic, { name: "Mary Seacole" })).id;
  await assignCareTeam(clinic, patientId);
  colleague = await signIn(app, { role: "practitioner", tenantId: clinic.tenant.id });
  await assignCareTeam(clinic, patientId, colleague);
});
afterAll(async () => {
  await app?.close();
});

const notes = () => `/api/v1/patients/${patientId}/notes`;

describe("clinical notes", () => {
  it("keeps every version: edits of a draft and amendments of a signed note add versions and never overwrite", async () => {
    const d = clinic.doctor.agent;
    const created = await d.post(notes()).send({ body: "Chest pain on exertion, two weeks." });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ status: "draft", currentVersion: 1, signedVersion: null, kind: "note" });
    const url = `${notes()}/${created.body.id}`;
    expectProblem(await d.put(url).send({ body: "x" }), 428, "precondition-required");
    const edited = await d.put(url).set("If-Match", tag(created)).send({ body: "Chest pain on exertion, two weeks. No syncope." });
    expect(edited.body).toMatchObject({ status: "draft", currentVersion: 2 });
    expectProblem(await d.put(url).set("If-Match", tag(created)).send({ body: "lost update" }), 412, "precondition-failed");

    const signed = await d.post(`${url}/sign`).set("If-Match", tag(edited)).send({});
    expect(signed.body).toMatchObject({ status: "signed", signedVersion: 2, signedBy: clinic.doctor.user.id });
    expectProblem(await d.post(`${url}/sign`).set("If-Match", tag(signed)).send({}), 409, "conflict");
    expectProblem(await d.put(url).set("If-Match", tag(signed)).send({ body: "Changed after signing" }), 400, "invalid-request");
    const amended = await d.put(url).set("If-Match", tag(signed)).send({ body: "ECG added: sinus rhythm.", reason: "late ECG result" });
    expect(amended.body).toMatchObject({ status: "amended", currentVersion: 3, signedVersion: 2, body: "ECG added: sinus rhythm." });

    const history = await d.get(`${url}/versions`);
    expect(history.body.versions).toEqual([
      expect.objectContaining({ version: 1, change: "original", body: "Chest pain on exertion, two weeks.", signed: false }),
      expect.objectContaining({ version: 2, change: "edit", body: "Chest pain on exertion, two weeks. No syncope.", signed: true }),
      expect.objectContaining({ version: 3, change: "amendment", reason: "late ECG result", signed: false }),
    ]);
    const resigned = await d.post(`${url}/sign`).set("If-Match", tag(amended)).send({});
    expect(resigned.body).toMatchObject({ status: "signed", signedVersion: 3 });

    const actions = (await auditEvents(app)).filter((e) => e.resource_id === created.body.id).map((e) => e.action);
    expect(actions).toEqual(["note.create", "note.edit", "note.sign", "note.amend", "note.history", "note.sign"]);
  });

  it("writes nothing, not even the audit event, when the note's insert (sent with COMMIT) fails, and says so in a problem", async () => {
    const before = (await auditEvents(app, { action: "note.create" })).length;
    await asSuperuser(app, "ALTER TABLE notes ADD CONSTRAINT test_refuse_transcriptions CHECK (kind <> 'transcription')");
    try {
      const res = await clinic.doctor.agent.post(notes()).send({ kind: "transcription", body: "Refused by the database." });
      expect(res.status).toBe(500);
      expect(res.headers["content-type"]).toMatch(/application\/problem\+json/);
      expect(JSON.stringify(res.body)).not.toContain("Refused by the database.");
    } finally {
      await asSuperuser(app, "ALTER TABLE notes DROP CONSTRAINT test_refuse_transcriptions");
    }
    expect(await asSuperuser(app, "SELECT 1 FROM notes WHERE kind = 'transcription'")).toEqual([]);
    expect((await auditEvents(app, { action: "note.create" })).length).toBe(before);
    // The next write goes through.
    expect((await clinic.doctor.agent.post(notes()).send({ kind: "transcription", body: "Accepted." })).status).toBe(201);
    expect((await auditEvents(app, { action: "note.create" })).length).toBe(before + 1);
  });

  it("lets only the care team write and read notes, only the author sign, and never front desk, admins, owners or auditors", async () => {
    const created = await clinic.doctor.agent.post(notes()).send({ body: "Plan: stress test." });
    const url = `${notes()}/${created.body.id}`;
    expect((await colleague.agent.get(url)).status).toBe(200);
    expectProblem(await colleague.agent.post(`${url}/sign`).set("If-Match", tag(created)).send({}), 403, "forbidden");
    for (const who of [clinic.frontDesk, clinic.admin, clinic.owner, clinic.auditor, clinic.otherDoctor]) {
      expectProblem(await who.agent.get(url), 403, "forbidden");
      expectProblem(await who.agent.get(notes()), 403, "forbidden");
      expectProblem(await who.agent.post(notes()).send({ body: "should not land" }), 403, "forbidden");
    }
    expectProblem(await clinic.doctor.agent.get(`/api/v1/patients/${patientId}/notes/00000000-0000-4000-8000-000000000000`), 404, "not-found");
    const listed = await clinic.doctor.agent.get(`${notes()}?limit=100`);
    expect(listed.body.items.map((n: { id: string }) => n.id)).toContain(created.body.id);
    expect(JSON.stringify(listed.body)).toContain("Plan: stress test.");
  });

  it("refuses to rewrite or delete note versions and consents, even on a raw app-role connection, outside a purge", async () => {
    const note = await clinic.doctor.agent.post(notes()).send({ body: "Original wording." });
    const consent = await clinic.frontDesk.agent
      .post(`/api/v1/patients/${patientId}/consents`)
      .send({ type: "treatment", textVersion: "3", evidence: { method: "attestation", statement: "Agreed verbally." } });
    const client = new pg.Client({ connectionString: app.db.appUrl });
    await client.connect();
    const inTenant = async (work: () => Promise<unknown>) => {
      await client.query("BEGIN");
      await client.query("SELECT set_config('wardkeep.tenant_id', $1, true), set_config('wardkeep.scope', 'tenant', true)", [clinic.tenant.id]);
      try {
        return await work();
      } finally {
        await client.query("ROLLBACK");
      }
    };
    try {
      await expect(inTenant(() => client.query("UPDATE note_versions SET created_by = created_by, change = 'edit' WHERE note_id = $1", [note.body.id]))).rejects.toThrow(
        /append-only/,
      );
      await expect(inTenant(() => client.query("DELETE FROM note_versions WHERE note_id = $1", [note.body.id]))).rejects.toThrow(/append-only/);
      await expect(inTenant(() => client.query("UPDATE consents SET consent_type = 'research' WHERE id = $1", [consent.body.id]))).rejects.toThrow(/append-only/);
      await expect(inTenant(() => client.query("DELETE FROM consents WHERE id = $1", [consent.body.id]))).rejects.toThrow(/append-only/);
      // Re-encryption after a key rotation rewrites ciphertext only: allowed.
      const reenc = (await inTenant(() => client.query("UPDATE note_versions SET body_enc = body_enc WHERE note_id = $1", [note.body.id]))) as pg.QueryResult;
      expect(reenc.rowCount).toBe(1);
    } finally {
      await client.end();
    }
    expect((await clinic.doctor.agent.get(`${notes()}/${note.body.id}`)).body.body).toBe("Original wording.");
  });
});

describe("consents", () => {
  const consents = () => `/api/v1/patients/${patientId}/consents`;
  const signature = { method: "signature", mediaType: "image/png", data: randomBytes(600).toString("base64") };

  it("records grants and revocations as events and answers whether a consent is in force now or at any past moment", async () => {
    const granted = await clinic.frontDesk.agent.post(consents()).send({ type: "research", textVersion: "2024.1", scope: "Registry of cardiac outcomes", evidence: signature });
    expect(granted.status).toBe(201);
    expect(granted.body).toMatchObject({
      type: "research",
      textVersion: "2024.1",
      scope: "Registry of cardiac outcomes",
      state: "in_force",
      revocation: null,
      evidence: signature,
    });
    const check = (q: string) => clinic.doctor.agent.get(`${consents()}/in-force?type=research${q}`);
    expect((await check("")).body).toMatchObject({ inForce: true, consent: { id: granted.body.id } });
    expect((await check("&textVersion=2025.1")).body.inForce).toBe(false);

    const revoked = await clinic.frontDesk.agent
      .post(`${consents()}/${granted.body.id}/revocation`)
      .send({ evidence: { method: "attestation", statement: "Patient withdrew by phone." }, reason: "moved away" });
    expect(revoked.status).toBe(201);
    expect(revoked.body).toMatchObject({ state: "revoked", revocation: { reason: "moved away", revokedBy: clinic.frontDesk.user.id }, evidence: signature });
    expectProblem(
      await clinic.frontDesk.agent.post(`${consents()}/${granted.body.id}/revocation`).send({ evidence: { method: "attestation", statement: "again" } }),
      409,
      "conflict",
    );

    expect((await check("")).body).toMatchObject({ inForce: false, consent: null });
    // History is never rewritten: the moment of the grant still answers "in force".
    expect((await check(`&at=${encodeURIComponent(granted.body.grantedAt)}`)).body).toMatchObject({ inForce: true, consent: { id: granted.body.id } });
    expect((await check(`&at=${encodeURIComponent(revoked.body.revocation.revokedAt)}`)).body.inForce).toBe(false);
    expect((await check(`&at=2000-01-01T00:00:00Z`)).body.inForce).toBe(false);

    const history = await clinic.frontDesk.agent.get(`${consents()}?type=research`);
    expect(history.body.items).toEqual([expect.objectContaining({ id: granted.body.id, state: "revoked" })]);
    expect(JSON.stringify(history.body)).not.toContain(signature.data); // evidence only on the single read

    const checks = (await auditEvents(app, { action: "consent.check" })).filter((e) => e.patient_id === patientId);
    expect(checks.length).toBeGreaterThanOrEqual(5);
    expect(JSON.stringify(checks)).not.toContain("moved away");
  });

  it("lets a consent lapse at its expiry and refuses bad consent records", async () => {
    const soon = new Date(Date.now() + 1500).toISOString();
    const granted = await clinic.doctor.agent
      .post(consents())
      .send({ type: "telehealth", textVersion: "1", evidence: { method: "attestation", statement: "Agreed on video call." }, expiresAt: soon });
    expect(granted.status).toBe(201);
    expect((await clinic.doctor.agent.get(`${consents()}/in-force?type=telehealth&at=${encodeURIComponent(new Date(Date.parse(soon) - 1).toISOString())}`)).body.inForce).toBe(
      true,
    );
    expect((await clinic.doctor.agent.get(`${consents()}/in-force?type=telehealth&at=${encodeURIComponent(soon)}`)).body.inForce).toBe(false);

    const post = (body: object) => clinic.frontDesk.agent.post(consents()).send(body);
    const good = { type: "research", textVersion: "1", evidence: { method: "attestation", statement: "ok" } };
    expectProblem(await post({ ...good, type: "Research!" }), 400, "invalid-request");
    expectProblem(await post({ ...good, evidence: { method: "signature", mediaType: "image/png", data: "not base64 !!" } }), 400, "invalid-request");
    expectProblem(await post({ ...good, evidence: { method: "thumbprint" } }), 400, "invalid-request");
    expectProblem(await post({ ...good, expiresAt: "2001-01-01T00:00:00Z" }), 400, "invalid-request");
    expectProblem(await post({ ...good, grantedAt: "2001-01-01T00:00:00Z" }), 400, "invalid-request");
    expectProblem(await clinic.frontDesk.agent.get(`${consents()}/in-force`), 400, "invalid-request");
    for (const who of [clinic.auditor, clinic.admin, clinic.otherDoctor]) expectProblem(await who.agent.get(consents()), 403, "forbidden");
  });
});

describe("attachments", () => {
  const attachments = () => `/api/v1/patients/${patientId}/attachments`;
  const download = (who: SignedIn, id: string) => who.agent.get(`${attachments()}/${id}/content`).buffer(true).parse(binary);
  const storedFile = async (id: string) => {
    const [row] = await asSuperuser<{ storage_path: string; cipher_sha256: Buffer; stored_bytes: string }>(
      app,
      "SELECT storage_path, cipher_sha256, stored_bytes FROM attachments WHERE id = $1",
      [id],
    );
    return { ...row!, file: path.join(app.dataDir, "attachments", row!.storage_path) };
  };

  it("streams an upload into an encrypted file and streams it back intact with its digest, audited both ways", async () => {
    const content = Buffer.concat([Buffer.from("RIFF-audio-recording-of-consultation "), randomBytes(1_500_000)]);
    const up = await clinic.doctor.agent
      .post(`${attachments()}?kind=audio`)
      .set("Content-Type", "audio/wav")
      .set("Content-Disposition", "attachment; filename*=UTF-8''Mary%20Seacole%20%E2%80%94%20visit.wav")
      .send(content);
    expect(up.status, JSON.stringify(up.body)).toBe(201);
    const sha = createHash("sha256").update(content).digest("hex");
    expect(up.body).toMatchObject({ kind: "audio", mediaType: "audio/wav", filename: "Mary Seacole — visit.wav", sizeBytes: content.length, sha256: sha });

    const dl = await download(clinic.doctor, up.body.id);
    expect(dl.status).toBe(200);
    expect((dl.body as Buffer).equals(content)).toBe(true);
    expect(dl.headers["content-type"]).toBe("audio/wav");
    expect(dl.headers["repr-digest"]).toBe(`sha-256=:${Buffer.from(sha, "hex").toString("base64")}:`);
    expect(dl.headers["content-disposition"]).toContain("filename*=UTF-8''Mary%20Seacole%20%E2%80%94%20visit.wav");

    const stored = await storedFile(up.body.id);
    const onDisk = fs.readFileSync(stored.file);
    expect(onDisk.length).toBe(Number(stored.stored_bytes));
    expect(createHash("sha256").update(onDisk).digest().equals(stored.cipher_sha256)).toBe(true);
    expect(onDisk.includes(Buffer.from("RIFF-audio-recording"))).toBe(false);
    expect(onDisk.includes(content.subarray(100_000, 100_064))).toBe(false);
    expect(fs.statSync(stored.file).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(path.dirname(stored.file)).filter((f) => f.endsWith(".part"))).toEqual([]);

    const listed = await clinic.doctor.agent.get(attachments());
    expect(listed.body.items).toEqual([expect.objectContaining({ id: up.body.id, filename: "Mary Seacole — visit.wav" })]);
    const actions = (await auditEvents(app)).filter((e) => e.resource_id === up.body.id).map((e) => e.action);
    expect(actions).toEqual(["attachment.create", "attachment.download"]);

    // A transcription of that recording points back at it.
    const t = await clinic.doctor.agent.post(notes()).send({ kind: "transcription", body: "Transcript: patient describes...", sourceAttachmentId: up.body.id });
    expect(t.body).toMatchObject({ kind: "transcription", sourceAttachmentId: up.body.id });
    expectProblem(
      await clinic.doctor.agent.post(notes()).send({ kind: "transcription", body: "x", sourceAttachmentId: "00000000-0000-4000-8000-000000000000" }),
      400,
      "invalid-request",
    );
  });

  it("refuses uploads over the limit with 413 and keeps nothing, whether declared or streamed", async () => {
    const before = await asSuperuser(app, "SELECT id FROM attachments");
    const declared = await clinic.doctor.agent
      .post(attachments())
      .set("Content-Type", "application/pdf")
      .send(Buffer.alloc(LIMIT + 1, 1));
    expectProblem(declared, 413, "payload-too-large");
    const streamed = await streamRequest(app, {
      method: "POST",
      path: `${attachments()}?kind=document`,
      headers: { ...clinic.doctor.headers, "Content-Type": "application/pdf" },
      chunks: 48,
      chunkBytes: 64 * 1024,
    });
    if ("status" in streamed) {
      expect(streamed.status).toBe(413);
      expect((streamed.body as { type: string }).type).toBe("urn:wardkeep:problem:payload-too-large");
    } else {
      // The server may cut a sender that keeps going after the answer.
      expect(streamed.error).toMatch(/ECONNRESET|EPIPE/);
    }
    expect(await asSuperuser(app, "SELECT id FROM attachments")).toEqual(before);
    const dir = path.join(app.dataDir, "attachments", clinic.tenant.id, patientId);
    expect(fs.readdirSync(dir).filter((f) => f.endsWith(".part"))).toEqual([]);
    expect(fs.readdirSync(dir)).toHaveLength(before.length);
  });

  it("never sends bytes of a tampered or swapped file", async () => {
    const a = await clinic.doctor.agent.post(attachments()).set("Content-Type", "application/pdf").send(randomBytes(300_000));
    const b = await clinic.doctor.agent.post(attachments()).set("Content-Type", "application/pdf").send(randomBytes(300_000));
    const fa = await storedFile(a.body.id);
    const fb = await storedFile(b.body.id);
    const original = fs.readFileSync(fa.file);
    const flipped = Buffer.from(original);
    flipped[200_000] = flipped[200_000]! ^ 0x01;
    fs.writeFileSync(fa.file, flipped);
    const broken = await download(clinic.doctor, a.body.id).catch((err: Error) => err);
    // Either the connection is cut or the body ends short: never the full, unauthenticated content.
    if (!(broken instanceof Error)) expect((broken.body as Buffer).length).toBeLessThan(300_000);
    fs.writeFileSync(fa.file, fs.readFileSync(fb.file));
    const swapped = await download(clinic.doctor, a.body.id).catch((err: Error) => err);
    if (!(swapped instanceof Error)) expect((swapped.body as Buffer).length).toBe(0);
    expect(app.logLines.some((l) => l.includes("attachment download failed mid-stream"))).toBe(true);
    fs.writeFileSync(fa.file, original);
    expect(((await download(clinic.doctor, a.body.id)).body as Buffer).length).toBe(300_000);
  });

  it("serves uploaded HTML and SVG as an octet-stream download, never as a page, and refuses names with bidirectional controls", async () => {
    const d = clinic.doctor.agent;
    for (const [type, body] of [
      ["text/html", "<script>alert(document.cookie)</script>"],
      ["image/svg+xml", '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'],
    ] as const) {
      const up = await d.post(attachments()).set("Content-Type", type).set("Content-Disposition", "attachment; filename=x").send(Buffer.from(body));
      expect(up.status, JSON.stringify(up.body)).toBe(201);
      expect(up.body.mediaType).toBe(type);
      const dl = await download(clinic.doctor, up.body.id);
      expect(dl.headers["content-type"]).toBe("application/octet-stream");
      expect(dl.headers["content-disposition"]).toMatch(/^attachment/);
      expect(dl.headers["x-content-type-options"]).toBe("nosniff");
      expect((dl.body as Buffer).toString()).toBe(body);
    }
    const pdf = await d.post(attachments()).set("Content-Type", "application/pdf").send(Buffer.from("%PDF-1.7"));
    expect((await download(clinic.doctor, pdf.body.id)).headers["content-type"]).toBe("application/pdf");
    // "invoice<RLO>fdp.exe" shows as "invoiceexe.pdf".
    const bidi = await d
      .post(attachments())
      .set("Content-Type", "application/pdf")
      .set("Content-Disposition", "attachment; filename*=UTF-8''invoice%E2%80%AEfdp.exe")
      .send(Buffer.from("x"));
    expectProblem(bidi, 400, "invalid-request");
    expect(JSON.stringify(bidi.body)).toContain("bidirectional");
  });

  it("keeps front desk and other roles out and refuses form encodings, bad names and kinds", async () => {
    const up = (who: SignedIn) => who.agent.post(attachments()).set("Content-Type", "application/pdf").send(Buffer.from("%PDF-1.7"));
    for (const who of [clinic.frontDesk, clinic.admin, clinic.auditor, clinic.otherDoctor]) expectProblem(await up(who), 403, "forbidden");
    const d = clinic.doctor.agent;
    expectProblem(await d.post(attachments()).set("Content-Type", "multipart/form-data; boundary=x").send(Buffer.from("--x--")), 415, "unsupported-media-type");
    expectProblem(await d.post(attachments()).set("Content-Type", "application/x-www-form-urlencoded").send("a=b"), 415, "unsupported-media-type");
    expectProblem(await d.post(attachments()).set("Content-Type", "not a type").send(Buffer.from("x")), 415, "unsupported-media-type");
    expectProblem(await d.post(`${attachments()}?kind=video`).set("Content-Type", "video/mp4").send(Buffer.from("x")), 400, "invalid-request");
    expectProblem(
      await d.post(attachments()).set("Content-Type", "application/pdf").set("Content-Disposition", "attachment; filename*=UTF-8''%C3%28.pdf").send(Buffer.from("x")),
      400,
      "invalid-request",
    );
    expectProblem(await d.post(attachments()).set("Content-Type", "application/pdf").send(Buffer.alloc(0)), 400, "invalid-request");
    expectProblem(
      await d.post("/api/v1/patients/00000000-0000-4000-8000-000000000000/attachments").set("Content-Type", "application/pdf").send(Buffer.from("x")),
      404,
      "not-found",
    );
    // Cookie-authenticated uploads need the CSRF header like every other write.
    const noCsrf = await (
      await import("supertest")
    )
      .default(app.baseUrl)
      .post(attachments())
      .ca(app.caPem)
      .set("Cookie", clinic.doctor.cookie)
      .set("Content-Type", "application/pdf")
      .send(Buffer.from("x"));
    expect(noCsrf.status).toBe(403);
  });

  it("sweeps uploads a crash left unfinished once they are a day old, and nothing else", async () => {
    const dir = path.join(app.dataDir, "attachments", clinic.tenant.id, patientId);
    const stale = path.join(dir, "00000000-0000-4000-8000-00000000dead.part");
    const fresh = path.join(dir, "00000000-0000-4000-8000-00000000f00d.part");
    fs.writeFileSync(stale, randomBytes(100));
    fs.writeFileSync(fresh, randomBytes(100));
    const old = new Date(Date.now() - 2 * 86_400_000);
    fs.utimesSync(stale, old, old);
    const kept = fs.readdirSync(dir).filter((f) => f.endsWith(".wka"));
    expect(await sweepStaleUploads(app.ctx)).toBe(1);
    expect(fs.existsSync(stale)).toBe(false);
    expect(fs.existsSync(fresh)).toBe(true);
    expect(fs.readdirSync(dir).filter((f) => f.endsWith(".wka"))).toEqual(kept);
    fs.rmSync(fresh);
  });

  it("deletes an attachment with its file, except while a legal hold stands", async () => {
    const up = await clinic.doctor.agent.post(attachments()).set("Content-Type", "image/png").send(randomBytes(5000));
    const file = (await storedFile(up.body.id)).file;
    const hold = await clinic.admin.agent.post(`/api/v1/patients/${patientId}/legal-holds`).send({ reason: "Matter 2031-17, records preservation notice" });
    expect(hold.status).toBe(201);
    expectProblem(await clinic.doctor.agent.delete(`${attachments()}/${up.body.id}`), 409, "legal-hold");
    expect(fs.existsSync(file)).toBe(true);
    await clinic.admin.stepUp();
    expect((await clinic.admin.agent.post(`/api/v1/patients/${patientId}/legal-holds/${hold.body.id}/release`).send({})).status).toBe(200);
    expect((await clinic.doctor.agent.delete(`${attachments()}/${up.body.id}`)).status).toBe(204);
    expect(fs.existsSync(file)).toBe(false);
    expectProblem(await clinic.doctor.agent.get(`${attachments()}/${up.body.id}/content`), 404, "not-found");
  });
});
