import { Writable } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createLogger, silentLogger, type Logger } from "../../../daemon/log/logger.js";

// Made-up canary PHI; the integration suite seeds the same kind of values.
const NAME = "Zebulon Quaxworth";
const DOB = "1961-04-17";
const MRN = "MRN-88412077";
const PHONE = "+1 (555) 010-7788";
const EMAIL = "zebulon.q@example.org";
const ADDRESS = "1742 Quince Orchard Lane, Brambleton VA 20148";
const NOTE = "Patient reports intermittent chest pain radiating to the left arm";
const PASSWORD = "correct-horse-battery-staple";
const CANARY_FRAGMENTS = ["Zebulon", "Quaxworth", DOB, "88412077", "010-7788", "zebulon.q", "example.org", "Quince", "Brambleton", "chest pain", "battery-staple"];

const REQUEST_ID = "3f1c2a9e-7b4d-4c8e-9a61-2d5e8f0b7c13";
const PATIENT_ID = "b7e4d2c1-0a9f-4e3b-8c7d-6f5e4d3c2b1a";
const OCCURRED_AT = "2026-11-23T10:00:00Z";

interface Capture {
  logger: Logger;
  /** Waits for winston's stream pipeline, then returns every line parsed as JSON. */
  lines(): Promise<Array<Record<string, any>>>;
  raw(): string;
}

function capture(opts: { level?: string; includeStack?: boolean } = {}): Capture {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(chunk.toString());
      callback();
    },
  });
  const logger = createLogger({
    level: opts.level ?? "debug",
    stream,
    service: "wardkeep-test",
    includeStack: opts.includeStack,
  });
  const raw = () => chunks.join("");
  return {
    logger,
    raw,
    async lines() {
      for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
      const text = raw();
      expect(text.endsWith("\n")).toBe(true);
      // JSON.parse throws on any line that is not a complete JSON object.
      return text
        .trimEnd()
        .split("\n")
        .map((line) => JSON.parse(line) as Record<string, any>);
    },
  };
}

function expectNoCanary(text: string): void {
  for (const fragment of CANARY_FRAGMENTS) expect(text).not.toContain(fragment);
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("createLogger", () => {
  it("writes one JSON object per line with ISO timestamp, level, message and metadata", async () => {
    const { logger, lines } = capture();
    logger.info("request finished", {
      requestId: REQUEST_ID,
      method: "GET",
      path: "/api/v1/patients",
      status: 200,
      durationMs: 12,
    });
    const [line] = await lines();
    expect(line).toMatchObject({
      level: "info",
      message: "request finished",
      service: "wardkeep-test",
      requestId: REQUEST_ID,
      method: "GET",
      path: "/api/v1/patients",
      status: 200,
      durationMs: 12,
    });
    expect(new Date(line!.timestamp).toISOString()).toBe(line!.timestamp);
    expect(Object.keys(line!).slice(0, 3)).toEqual(["timestamp", "level", "message"]);
  });

  it("never lets canary PHI reach a log line, whatever shape it is logged in", async () => {
    const { logger, lines, raw } = capture();
    const patient = {
      id: PATIENT_ID,
      tenantId: "tenant-7",
      first_name: "Zebulon",
      last_name: "Quaxworth",
      date_of_birth: DOB,
      mrn: MRN,
      phoneNumbers: [PHONE],
      email: EMAIL,
      address: ADDRESS,
      notes: [{ id: 1, body: NOTE, createdAt: OCCURRED_AT }],
    };

    // Structured metadata: flat, nested, arrays, snake_case and camelCase keys.
    logger.info("patient created", {
      requestId: REQUEST_ID,
      patient,
      occurredAt: OCCURRED_AT,
    });
    logger.info("login failed", {
      email: EMAIL,
      password: PASSWORD,
      status: 401,
    });
    logger.debug("batch", {
      items: [
        { id: 1, patientName: NAME },
        { id: 2, full_name: NAME, DOB },
      ],
    });
    logger.warn("contact changed", {
      change: { field: "phone", before: PHONE, after: "[none]" },
    });
    // PHI in free strings: message text, interpolation, JSON fragments and labelled values.
    logger.info(`lookup by ${EMAIL} / ${PHONE} / ${DOB} / ${MRN}`, {
      requestId: REQUEST_ID,
    });
    logger.info("lookup %s for %o", EMAIL, {
      firstName: "Zebulon",
      id: PATIENT_ID,
    });
    logger.warn(`invalid body {"name":"${NAME}","dob":"${DOB}"} for patient name: ${NAME}`);
    // Errors: as metadata, as the entry itself, nested, with database details.
    const dbError = Object.assign(new Error(`duplicate key for ${EMAIL}`), {
      code: "23505",
      detail: `Key (name)=(${NAME}) already exists.`,
      sql: `INSERT INTO patients (name, note) VALUES ('${NAME}', '${NOTE}')`,
    });
    logger.error("could not create patient", dbError);
    logger.error(new Error(`DOB ${DOB} is after admission for ${MRN}`));
    logger.error("import row failed", {
      row: 17,
      error: new Error(`bad phone ${PHONE}`),
      patient: { address: ADDRESS },
    });
    // Object-form entries and child loggers.
    logger.log({
      level: "info",
      message: "raw entry",
      note: NOTE,
      id: PATIENT_ID,
    });
    const child = logger.child({ requestId: REQUEST_ID });
    child.info("child metadata", { lastName: "Quaxworth", status: 200 });
    child.error("child error", dbError);
    child.error(new Error(`child saw ${EMAIL}`));

    const parsed = await lines();
    expect(parsed).toHaveLength(14);
    expectNoCanary(raw());

    // The useful fields survived.
    expect(parsed[0]).toMatchObject({
      requestId: REQUEST_ID,
      occurredAt: OCCURRED_AT,
      patient: {
        id: PATIENT_ID,
        tenantId: "tenant-7",
        first_name: "[REDACTED]",
        notes: "[REDACTED]",
      },
    });
    expect(parsed[1]).toMatchObject({
      email: "[REDACTED]",
      password: "[REDACTED]",
      status: 401,
    });
    expect(parsed[2]!.items).toEqual([
      { id: 1, patientName: "[REDACTED]" },
      { id: 2, full_name: "[REDACTED]", DOB: "[REDACTED]" },
    ]);
    expect(parsed[3]!.change).toEqual({
      field: "phone",
      before: "[phone]",
      after: "[none]",
    });
    expect(parsed[4]!.message).toBe("lookup by [email] / [phone] / [date] / MRN [mrn]");
    expect(parsed[5]!.message).toContain(PATIENT_ID);
    expect(parsed[7]).toMatchObject({
      message: "could not create patient",
      error: {
        name: "Error",
        message: "duplicate key for [email]",
        code: "23505",
      },
    });
    expect(parsed[7]).not.toHaveProperty("detail");
    expect(parsed[7]).not.toHaveProperty("sql");
    expect(parsed[8]).toMatchObject({
      level: "error",
      error: { name: "Error" },
      service: "wardkeep-test",
    });
    expect(parsed[9]).toMatchObject({
      row: 17,
      error: { name: "Error", message: "bad phone [phone]" },
    });
    expect(parsed[10]).toMatchObject({ note: "[REDACTED]", id: PATIENT_ID });
    expect(parsed[12]).toMatchObject({
      requestId: REQUEST_ID,
      message: "child error",
      error: { name: "Error", code: "23505" },
    });
    expect(parsed[13]).toMatchObject({
      requestId: REQUEST_ID,
      error: { name: "Error", message: "child saw [email]" },
    });
    for (const line of parsed) {
      expect(line.timestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    }
  });

  it("does not write stacks unless includeStack is set, and scrubs them when it is", async () => {
    const plain = capture();
    plain.logger.error("boom", new Error(`failed for ${EMAIL}`));
    plain.logger.child({ requestId: REQUEST_ID }).error(new Error("child boom"));
    const plainLines = await plain.lines();
    expect(plain.raw()).not.toContain("stack");
    expect(plain.raw()).not.toContain("logger.test.ts");
    expect(plainLines).toHaveLength(2);

    const verbose = capture({ includeStack: true });
    verbose.logger.error("boom", new Error(`failed for ${EMAIL}`));
    const [line] = await verbose.lines();
    expect(line!.error.stack).toContain("Error: failed for [email]");
    expect(line!.error.stack).toContain("logger.test.ts");
    expectNoCanary(verbose.raw());
  });

  it("logs cyclic and very deep metadata without throwing", async () => {
    const { logger, lines } = capture();
    const patient: Record<string, unknown> = { id: PATIENT_ID, email: EMAIL };
    patient.self = patient;
    let deep: Record<string, unknown> = { dob: DOB };
    for (let i = 0; i < 30; i++) deep = { child: deep };
    expect(() => logger.info("cyclic", { patient, deep })).not.toThrow();
    const [line] = await lines();
    expect(line!.patient).toEqual({
      id: PATIENT_ID,
      email: "[REDACTED]",
      self: "[Circular]",
    });
    expect(JSON.stringify(line!.deep)).toContain("[Truncated]");
  });

  it("keeps a message with newlines on one line", async () => {
    const { logger, lines, raw } = capture();
    logger.warn('first\nsecond {"forged":true}');
    const parsed = await lines();
    expect(parsed).toHaveLength(1);
    expect(parsed[0]!.message).toBe('first\nsecond {"forged":true}');
    expect(raw().split("\n")).toHaveLength(2);
  });

  it("filters by level", async () => {
    const { logger, lines } = capture({ level: "warn" });
    logger.debug("hidden");
    logger.info("hidden too");
    logger.warn("shown");
    const parsed = await lines();
    expect(parsed.map((line) => line.message)).toEqual(["shown"]);
  });

  it("rejects an unknown level", () => {
    expect(() => createLogger({ level: "loud" })).toThrow(/Unknown log level "loud"/);
  });

  it("writes to stdout by default", async () => {
    const writes: string[] = [];
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      writes.push(chunk.toString());
      return true;
    });
    createLogger({ level: "info" }).info("to stdout", { email: EMAIL, id: 3 });
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    vi.restoreAllMocks();
    const line = writes.find((w) => w.includes("to stdout"));
    expect(line).toBeDefined();
    expect(JSON.parse(line!)).toMatchObject({
      message: "to stdout",
      email: "[REDACTED]",
      id: 3,
    });
  });
});

describe("silentLogger", () => {
  it("accepts every call and writes nothing", async () => {
    const writes: unknown[] = [];
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      writes.push(chunk);
      return true;
    });
    const logger = silentLogger();
    logger.error("boom", new Error(EMAIL));
    logger.info("hello", { email: EMAIL });
    logger.child({ requestId: REQUEST_ID }).warn("child");
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    vi.restoreAllMocks();
    expect(writes).toEqual([]);
  });
});
