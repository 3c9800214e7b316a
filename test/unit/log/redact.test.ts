import { describe, expect, it } from "vitest";
import { isSensitiveKey, redactValue, scrubText, SENSITIVE_KEYS } from "../../../daemon/log/redact.js";

// Made-up canary PHI: none of these strings may survive redaction in any shape.
const CANARY = {
  name: "Zebulon Quaxworth",
  firstName: "Zebulon",
  lastName: "Quaxworth",
  dob: "1961-04-17",
  mrn: "MRN-88412077",
  mrnDigits: "88412077",
  phone: "+1 (555) 010-7788",
  email: "zebulon.q@example.org",
  address: "1742 Quince Orchard Lane, Brambleton",
  note: "Patient reports intermittent chest pain radiating to left arm",
  ssn: "078-05-1120",
  password: "correct-horse-battery-staple",
  token: "wk_Xy9aB3dE6gH9jK2mN5pQ8rS1tU4vW7xZ0cF",
};
const CANARY_FRAGMENTS = [
  "Zebulon",
  "Quaxworth",
  "1961-04-17",
  "88412077",
  "010-7788",
  "zebulon.q",
  "example.org",
  "Quince Orchard",
  "Brambleton",
  "chest pain",
  "078-05-1120",
  "battery-staple",
  "Xy9aB3dE6gH9jK2mN5pQ8rS1tU4vW7xZ0cF",
];

function expectNoCanary(output: unknown): string {
  const text = JSON.stringify(output);
  for (const fragment of CANARY_FRAGMENTS) expect(text).not.toContain(fragment);
  return text;
}

const UUID = "3f1c2a9e-7b4d-4c8e-9a61-2d5e8f0b7c13";
const TIMESTAMP = "2026-11-23T10:00:00Z";

describe("isSensitiveKey", () => {
  it("matches PHI and secret keys whatever the casing or separators", () => {
    for (const key of [
      "first_name",
      "firstName",
      "FIRST-NAME",
      "FirstName",
      "date_of_birth",
      "DOB",
      "mrn",
      "phone_number",
      "Email",
      "email_address",
      "postal_code",
      "note",
      "Notes",
      "transcript",
      "password",
      "api_key",
      "apiKey",
      "Authorization",
      "set-cookie",
      "recovery_code",
      "kek",
      "dek",
      "key",
      "private_key",
      "signature",
      "otp",
      "code",
      "share",
      "reason",
      "body",
    ]) {
      expect(isSensitiveKey(key), key).toBe(true);
    }
  });

  it("treats compound names ending in Password, Token or Secret as secrets", () => {
    for (const key of ["adminPassword", "csrf_token", "sessionToken", "clientSecret", "WEBHOOK-SECRET"]) {
      expect(isSensitiveKey(key), key).toBe(true);
    }
  });

  it("catches compound PHI names such as patientEmail or home_phone", () => {
    for (const key of ["patientEmail", "home_phone", "patientDob", "patient_first_name", "clinicalNote"]) {
      expect(isSensitiveKey(key), key).toBe(true);
    }
  });

  it("keeps operational keys", () => {
    for (const key of [
      "id",
      "tenantId",
      "tenant_id",
      "requestId",
      "status",
      "statusCode",
      "method",
      "path",
      "durationMs",
      "level",
      "message",
      "timestamp",
      "action",
      "resourceType",
      "seq",
      "userId",
      "keyVersion",
      "publicKey",
      "tokenId",
      "emailVerified",
      "ipAddress",
    ]) {
      expect(isSensitiveKey(key), key).toBe(false);
    }
  });

  it("exports the key list and every listed key is sensitive", () => {
    expect(SENSITIVE_KEYS.length).toBeGreaterThan(50);
    for (const key of SENSITIVE_KEYS) expect(isSensitiveKey(key), key).toBe(true);
  });
});

describe("redactValue", () => {
  it("replaces sensitive values in nested objects and arrays and keeps the rest", () => {
    const input = {
      requestId: UUID,
      tenantId: "t-42",
      status: 201,
      path: "/api/v1/patients",
      at: TIMESTAMP,
      patient: {
        id: UUID,
        first_name: CANARY.firstName,
        LastName: CANARY.lastName,
        "date-of-birth": CANARY.dob,
        mrn: CANARY.mrn,
        contacts: [
          { kind: "mobile", phone_number: CANARY.phone },
          { kind: "work", email: CANARY.email },
        ],
        address: {
          street: "1742 Quince Orchard Lane",
          city: "Brambleton",
          postal_code: "20148",
        },
        notes: [{ id: 7, body: CANARY.note }],
      },
      credentials: {
        password: CANARY.password,
        accessToken: CANARY.token,
        ssn: CANARY.ssn,
      },
    };
    const out = redactValue(input) as Record<string, any>;
    expectNoCanary(out);
    expect(out.requestId).toBe(UUID);
    expect(out.tenantId).toBe("t-42");
    expect(out.status).toBe(201);
    expect(out.path).toBe("/api/v1/patients");
    expect(out.at).toBe(TIMESTAMP);
    expect(out.patient.id).toBe(UUID);
    expect(out.patient.first_name).toBe("[REDACTED]");
    expect(out.patient.address).toBe("[REDACTED]");
    expect(out.patient.contacts[0]).toEqual({
      kind: "mobile",
      phone_number: "[REDACTED]",
    });
    expect(out.patient.notes).toBe("[REDACTED]");
    expect(out.credentials).toEqual({
      password: "[REDACTED]",
      accessToken: "[REDACTED]",
      ssn: "[REDACTED]",
    });
  });

  it("does not modify its input", () => {
    const input = {
      email: CANARY.email,
      nested: { password: CANARY.password },
    };
    redactValue(input);
    expect(input).toEqual({
      email: CANARY.email,
      nested: { password: CANARY.password },
    });
  });

  it("scrubs PHI-shaped strings under keys it does not recognise", () => {
    const out = redactValue({
      detailText: `call ${CANARY.phone} or ${CANARY.email}`,
      list: [CANARY.dob, CANARY.mrn],
    });
    expectNoCanary(out);
    expect(out).toEqual({
      detailText: "call [phone] or [email]",
      list: ["[date]", "MRN [mrn]"],
    });
  });

  it("keeps null and undefined under sensitive keys so absence stays visible", () => {
    expect(redactValue({ token: null, password: undefined })).toEqual({
      token: null,
      password: undefined,
    });
  });

  it("reduces Errors to name, scrubbed message and code, without the stack", () => {
    const err = Object.assign(new Error(`no patient with email ${CANARY.email} (${CANARY.mrn})`), {
      code: "23505",
      detail: `Key (name)=(${CANARY.name}) already exists.`,
      sql: `INSERT INTO patients VALUES ('${CANARY.name}')`,
    });
    const out = redactValue(err) as Record<string, unknown>;
    expectNoCanary(out);
    expect(out).toEqual({
      name: "Error",
      message: "no patient with email [email] (MRN [mrn])",
      code: "23505",
    });
    expect(out).not.toHaveProperty("stack");
  });

  it("keeps a scrubbed stack only when includeStack is passed", () => {
    const err = new TypeError(`bad dob ${CANARY.dob}`);
    const out = redactValue({ error: err }, { includeStack: true }) as {
      error: Record<string, string>;
    };
    expect(out.error.name).toBe("TypeError");
    expect(out.error.stack).toContain("TypeError: bad dob [date]");
    expect(out.error.stack).toContain("redact.test.ts");
    expectNoCanary(out);
  });

  it("redacts an Error's cause", () => {
    const err = new Error("save failed", {
      cause: new Error(`duplicate ${CANARY.email}`),
    });
    const out = redactValue(err) as Record<string, any>;
    expect(out.cause).toEqual({ name: "Error", message: "duplicate [email]" });
  });

  it("replaces cycles with [Circular] instead of throwing", () => {
    const a: Record<string, unknown> = { id: 1 };
    const b: Record<string, unknown> = { id: 2, a };
    a.b = b;
    a.self = a;
    const list: unknown[] = [a];
    list.push(list);
    const out = redactValue({ a, list }) as Record<string, any>;
    expect(out.a.self).toBe("[Circular]");
    expect(out.a.b.a).toBe("[Circular]");
    expect(out.list[1]).toBe("[Circular]");
    expect(() => JSON.stringify(out)).not.toThrow();
  });

  it("copies shared references that are not cycles", () => {
    const shared = { id: 9 };
    expect(redactValue({ x: shared, y: shared })).toEqual({
      x: { id: 9 },
      y: { id: 9 },
    });
  });

  it("truncates objects nested deeper than 8 levels", () => {
    let deep: Record<string, unknown> = { id: "bottom", email: CANARY.email };
    for (let i = 0; i < 20; i++) deep = { level: i, child: deep };
    const out = redactValue(deep);
    const text = JSON.stringify(out);
    expect(text).toContain("[Truncated]");
    expect(text).not.toContain("bottom");
    let node = out as Record<string, unknown>;
    let depth = 0;
    while (typeof node.child === "object" && node.child !== null) {
      node = node.child as Record<string, unknown>;
      depth++;
    }
    expect(depth).toBe(7);
    expect(node.child).toBe("[Truncated]");
  });

  it("turns non-JSON values into JSON-safe ones", () => {
    const out = redactValue({
      big: 10n,
      when: new Date(TIMESTAMP),
      bytes: Buffer.from("secret key material"),
      fn: () => 1,
      map: new Map<string, unknown>([
        ["email", CANARY.email],
        ["id", 3],
      ]),
      set: new Set([CANARY.email]),
    });
    expectNoCanary(out);
    expect(out).toEqual({
      big: "10",
      when: "2026-11-23T10:00:00.000Z",
      bytes: "[Binary 19 bytes]",
      fn: "[Function]",
      map: { email: "[REDACTED]", id: 3 },
      set: ["[email]"],
    });
  });

  it("redacts what toJSON would expose (ORM instances)", () => {
    const model = {
      dataValues: { id: 5, dob: CANARY.dob },
      toJSON() {
        return { id: 5, dob: CANARY.dob };
      },
    };
    expect(redactValue({ patient: model })).toEqual({
      patient: { id: 5, dob: "[REDACTED]" },
    });
  });

  it("survives getters that throw", () => {
    const hostile = {
      id: 1,
      get boom(): string {
        throw new Error("nope");
      },
    };
    expect(redactValue(hostile)).toEqual({ id: 1, boom: "[Unreadable]" });
  });
});

describe("scrubText", () => {
  it.each([
    [`contact ${CANARY.email} now`, "contact [email] now"],
    [`call ${CANARY.phone}`, "call [phone]"],
    ["call 555-123-4567 or (555) 123-4567 or 555.123.4567", "call [phone] or [phone] or [phone]"],
    ["London +44 20 7946 0958", "London [phone]"],
    [`born ${CANARY.dob}`, "born [date]"],
    ["born 04/17/1961", "born [date]"],
    ["born 17.04.1961", "born [date]"],
    ["born April 17, 1961", "born [date]"],
    [`ssn ${CANARY.ssn}`, "SSN [ssn]"],
    [`id check ${CANARY.ssn} ok`, "id check [ssn] ok"],
    ["Authorization: Bearer abc.DEF-123_x", "Authorization: Bearer [token]"],
    ["postgres://wardkeep:S3cr3t!pw@db.internal:5432/wardkeep", "postgres://wardkeep:****@db.internal:5432/wardkeep"],
    ["MRN: 12345", "MRN [mrn]"],
    ["lookup mrn=ABC123 failed", "lookup MRN [mrn] failed"],
    [`record ${CANARY.mrn} opened`, "record MRN [mrn] opened"],
    ["lives at 1742 Quince Orchard Lane", "lives at [address]"],
    ["patient name: Zebulon Quaxworth, ward 3", "patient name: [REDACTED], ward 3"],
    ['body {"firstName":"Zebulon","id":3}', 'body {"firstName":"[REDACTED]","id":3}'],
    ["GET /api/v1/invites/accept?token=abc123&tenant=4", "GET /api/v1/invites/accept?token=[REDACTED]&tenant=4"],
  ])("scrubs %j", (input, expected) => {
    expect(scrubText(input)).toBe(expected);
  });

  it("masks long hex and base64url secrets", () => {
    expect(scrubText(`kek 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08`)).toBe("kek [token]");
    expect(scrubText(`session ${CANARY.token}`)).toBe("session [token]");
    expect(scrubText("wrapped q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=")).toBe("wrapped [token]");
  });

  it("redacts a password or passphrase after its label, whole clause, and keeps the rest of the line", () => {
    expect(scrubText("login with password: hunter2, user 4")).toBe("login with password: [REDACTED], user 4");
    expect(scrubText("passphrase: correct horse battery staple")).toBe("passphrase: [REDACTED]");
    expect(scrubText("Passphrase: Run fast 42; retry")).toBe("Passphrase: [REDACTED]; retry");
  });

  it("keeps a sentence about a passphrase: the instruction or verdict after the label is not a secret", () => {
    for (const text of [
      "waiting for the unseal passphrase: run `wardkeep unseal`",
      "unseal passphrase: wrong, 2 attempts left",
      "password: not set for user 4",
      "passphrase: `wardkeep keys rekey --unseal passphrase`",
    ]) {
      expect(scrubText(text), text).toBe(text);
    }
  });

  it("keeps an SFTP host-key fingerprint (public) while a bare base64 secret of the same length is masked", () => {
    const line = "target nas: the server presented host key SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s, not the pinned SHA256:+Ab/9xQz1kLmNoPqRsTuVwXyZaBcDeFgHiJkLmNoPqR";
    expect(scrubText(line)).toBe(line);
    expect(scrubText("wrapped uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s")).toBe("wrapped [token]");
  });

  it("keeps UUIDs, ISO timestamps, request paths and status codes", () => {
    const line = `GET /api/v1/tenants/${UUID}/patients/${UUID} 200 at ${TIMESTAMP} (2026-11-23T10:00:00.123+01:00) took 12ms`;
    expect(scrubText(line)).toBe(line);
  });

  it("keeps ordinary operational text", () => {
    for (const text of [
      "listening on 0.0.0.0:8443",
      "migration 0007_audit_chain applied",
      "snapshot_retention_policy_for_tenant_2_daily finished",
      "wardkeep v1.2.10 started with 4 workers",
      "rotated key version 3 for tenant 42",
      "job purge-expired-sessions took 1234 ms",
    ]) {
      expect(scrubText(text), text).toBe(text);
    }
  });

  it("is idempotent", () => {
    const input = `${CANARY.email} ${CANARY.phone} ${CANARY.dob} ${CANARY.mrn} Bearer ${CANARY.token}`;
    const once = scrubText(input);
    expect(scrubText(once)).toBe(once);
    expectNoCanary(once);
  });
});
