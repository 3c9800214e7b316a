import fc from "fast-check";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn } from "../../helpers/actors.js";
import { createPatient } from "../../helpers/records.js";

/**
 * Hostile input over every operation of the served OpenAPI document, as four identities (no
 * credentials, front desk, practitioner, admin): random path parameters, query strings and JSON
 * bodies built from each operation's own field names with values of any type, unknown keys, lone
 * surrogates and control characters. Whatever comes in, the appliance must answer without a 5xx,
 * every error as problem+json, with no stack trace, no SQL and none of the caller's text.
 *
 * Seeded and bounded here (WARDKEEP_FUZZ_RUNS requests, 1,500 by default, well under a minute);
 * `npm run fuzz` runs many more with a fresh seed, printed so a failure can be replayed with
 * WARDKEEP_FUZZ_SEED.
 */
const RUNS = Number(process.env.WARDKEEP_FUZZ_RUNS ?? 1500);
const SEED = process.env.WARDKEEP_FUZZ_SEED === "random" ? Date.now() % 2 ** 31 : Number(process.env.WARDKEEP_FUZZ_SEED ?? 20261207);
if (process.env.WARDKEEP_FUZZ_SEED === "random") console.log(`fuzz seed ${SEED} (replay: WARDKEEP_FUZZ_SEED=${SEED})`);

type Operation = { method: string; path: string; params: string[]; query: string[]; bodyKeys: string[] | undefined; jsonBody: boolean };

/** Operations that end the fuzzing identities' own sessions would only make the rest of the run 401s. */
const SKIPPED = [/^post \/api\/v1\/auth\/logout$/, /^delete \/api\/v1\/sessions/, /^post \/api\/v1\/sessions\/revoke/];

let app: TestAppliance;
let operations: Operation[];
const identities: { label: string; headers: Record<string, string> }[] = [{ label: "anonymous", headers: {} }];
let patientId: string;

type Schema = { properties?: Record<string, unknown>; $ref?: string; allOf?: Schema[]; oneOf?: Schema[]; anyOf?: Schema[] };

beforeAll(async () => {
  app = await startTestAppliance();
  const tenant = await createTenant(app, "Fuzz General");
  for (const role of ["front_desk", "practitioner", "admin"] as const) {
    const s = await signIn(app, { role, tenantId: tenant.id, mfa: role !== "front_desk" });
    identities.push({ label: role, headers: s.headers });
  }
  patientId = await createPatient(app, tenant.id);
  const doc = (await request(app.baseUrl).get("/api/v1/openapi.json").ca(app.caPem)).body as {
    paths: Record<string, Record<string, { parameters?: { in: string; name: string }[]; requestBody?: { content: Record<string, { schema: Schema }> } }>>;
    components?: { schemas?: Record<string, Schema> };
  };
  const deref = (s: Schema | undefined): Schema | undefined => (s?.$ref ? deref(doc.components?.schemas?.[s.$ref.split("/").pop()!]) : s);
  const keysOf = (s: Schema | undefined): string[] => {
    const d = deref(s);
    if (!d) return [];
    return [...Object.keys(d.properties ?? {}), ...[...(d.allOf ?? []), ...(d.oneOf ?? []), ...(d.anyOf ?? [])].flatMap(keysOf)];
  };
  operations = Object.entries(doc.paths).flatMap(([p, ops]) =>
    Object.entries(ops).map(([method, op]) => {
      const json = op.requestBody?.content["application/json"];
      return {
        method,
        path: p,
        params: (op.parameters ?? []).filter((x) => x.in === "path").map((x) => x.name),
        query: (op.parameters ?? []).filter((x) => x.in === "query").map((x) => x.name),
        bodyKeys: json ? [...new Set(keysOf(json.schema))] : undefined,
        jsonBody: json !== undefined,
      };
    }),
  );
  operations = operations.filter((o) => !SKIPPED.some((re) => re.test(`${o.method} ${o.path}`)));
}, 120_000);
afterAll(async () => {
  await app?.close();
});

/** Text a caller might send: printable, unicode, control characters, lone surrogates, SQL and markup. */
const hostileText = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.string({ unit: "binary", maxLength: 20 }),
  fc.constantFrom("'; DROP TABLE patients; --", "<script>alert(1)</script>", "\ud800", "a\udc00b", "\u202eexe.pdf", "../../etc/passwd", "%00", "${jndi:ldap://x}"),
);
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  { depthSize: "small" },
  hostileText,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.uuid(),
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  fc.array(hostileText, { maxLength: 3 }),
  fc.dictionary(hostileText, hostileText, { maxKeys: 3 }),
);

/** A URL cannot carry a lone surrogate (it has no UTF-8 form): such text goes into paths and queries as U+FFFD. */
const urlSafe = (t: string) => t.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");

function requestFor(op: Operation) {
  const param = fc.oneof(
    fc.constant(patientId),
    fc.uuid(),
    hostileText.filter((s) => s.length > 0),
  );
  const params = fc.tuple(...op.params.map(() => param));
  const query = fc.dictionary(op.query.length ? fc.oneof(fc.constantFrom(...op.query), hostileText) : hostileText, fc.oneof(hostileText, fc.integer().map(String)), { maxKeys: 3 });
  const known = op.bodyKeys?.length ? fc.dictionary(fc.constantFrom(...op.bodyKeys), anyValue, { maxKeys: op.bodyKeys.length }) : fc.constant({});
  const body = fc.oneof(
    known,
    fc.tuple(known, fc.dictionary(hostileText, anyValue, { minKeys: 1, maxKeys: 3 })).map(([a, b]) => ({ ...b, ...a })),
    anyValue,
  );
  return fc.record({ params, query, body, who: fc.integer({ min: 0, max: identities.length - 1 }) });
}

/** Strings the caller sent that an error answer must not repeat (short ones could match by chance). */
function sentText(x: unknown, schemaNames: ReadonlySet<string>, out: string[] = []): string[] {
  if (typeof x === "string") {
    if (x.length >= 8 && /[A-Za-z]{4}/.test(x) && !schemaNames.has(x)) out.push(x);
  } else if (Array.isArray(x)) x.forEach((v) => sentText(v, schemaNames, out));
  else if (x && typeof x === "object") {
    for (const [k, v] of Object.entries(x)) {
      sentText(k, schemaNames, out);
      sentText(v, schemaNames, out);
    }
  }
  return out;
}

function isScimError(contentType: string, text: string): boolean {
  if (!/^application\/scim\+json/.test(contentType)) return false;
  try {
    const body = JSON.parse(text) as { schemas?: unknown };
    return Array.isArray(body.schemas) && body.schemas.includes("urn:ietf:params:scim:api:messages:2.0:Error");
  } catch {
    return false;
  }
}

describe("fuzzing every OpenAPI operation", () => {
  it(`answers ${RUNS} hostile requests without a 5xx, a stack trace, SQL or an echo, always problem+json on errors`, async () => {
    expect(operations.length).toBeGreaterThan(60);
    const problems: string[] = [];
    const perOperation = Math.max(1, Math.ceil(RUNS / operations.length));
    const fuzz = async (op: Operation) => {
      // Field and parameter names come from the schema, not the caller: naming them is not an echo.
      const schemaNames = new Set([...(op.bodyKeys ?? []), ...op.query, ...op.params]);
      await fc.assert(
        fc.asyncProperty(requestFor(op), async (input) => {
          let i = 0;
          const url = op.path.replace(/\{(\w+)\}/g, () => encodeURIComponent(urlSafe(String(input.params[i++] ?? "x"))));
          const query = Object.fromEntries(Object.entries(input.query).map(([k, v]) => [urlSafe(k), urlSafe(v)]));
          const identity = identities[input.who]!;
          let req = request(app.baseUrl)[op.method as "get"](url).ca(app.caPem).set(identity.headers).query(query);
          if (op.jsonBody) req = req.set("content-type", "application/json").send(JSON.stringify(input.body));
          const res = await req.ok(() => true);
          const where = `${identity.label} ${op.method.toUpperCase()} ${op.path} → ${res.status}`;
          const text = res.text ?? "";
          if (res.status >= 500) problems.push(`${where}: ${text.slice(0, 300)}`);
          if (res.status >= 400) {
            // SCIM clients (Entra ID, Okta) read SCIM's own error format (RFC 7644 §3.12); every other route answers problem+json.
            const scim = op.path.startsWith("/scim/v2");
            const type = String(res.headers["content-type"]);
            if (scim ? !isScimError(type, text) : !/^application\/problem\+json/.test(type)) problems.push(`${where}: not ${scim ? "a SCIM error" : "problem+json"} (${type})`);
            if (/\bat .+\.(ts|js):\d+/.test(text)) problems.push(`${where}: stack trace`);
            if (/\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b|relation "|syntax error at/i.test(text)) problems.push(`${where}: SQL`);
            for (const s of sentText([input.body, input.query, input.params], schemaNames)) {
              if (text.includes(s) || text.includes(JSON.stringify(s).slice(1, -1))) problems.push(`${where}: echoes ${JSON.stringify(s).slice(0, 40)}`);
            }
          }
        }),
        { numRuns: perOperation, seed: SEED, endOnFailure: true },
      );
    };
    // A few operations at a time, as several clients would: the appliance has cores to spare while one waits.
    const queue = [...operations];
    await Promise.all(
      [...Array(6)].map(async () => {
        for (let op = queue.shift(); op; op = queue.shift()) await fuzz(op);
      }),
    );
    expect(problems.slice(0, 20)).toEqual([]);
  }, 600_000);
});
