import { z } from "zod";
import { Invalid } from "./errors.js";

/**
 * Parsing a request's params, query and body for `defineRoute`, so that nothing the caller typed
 * comes back in the error: a value may be PHI, and so may a key (`{"Jane Doe, HIV+": 1}`), and an
 * error body travels into logs, screens and tickets. Zod names unknown keys in its message and
 * puts record keys in issue paths; both are rewritten here from the schema, which the caller did
 * not write.
 */

type Def = { type?: string; innerType?: z.ZodType; in?: z.ZodType; element?: z.ZodType; valueType?: z.ZodType; shape?: Record<string, z.ZodType> };
const defOf = (schema: z.ZodType | undefined): Def => ((schema as unknown as { def?: Def } | undefined)?.def ?? {}) as Def;

/** The schema under wrappers (optional, nullable, default, pipe, readonly) that do not change the shape. */
function unwrap(schema: z.ZodType | undefined): z.ZodType | undefined {
  let s = schema;
  for (let i = 0; i < 10 && s; i++) {
    const def = defOf(s);
    if (def.innerType) s = def.innerType;
    else if (def.type === "pipe" && def.in) s = def.in;
    else break;
  }
  return s;
}

/** Walks one path step down the schema; what it yields names the step as the schema does (record keys and indexes stay anonymous). */
function step(schema: z.ZodType | undefined, key: PropertyKey): { next: z.ZodType | undefined; label: string } {
  const s = unwrap(schema);
  const def = defOf(s);
  if (def.type === "object" && typeof key === "string" && s && key in (s as z.ZodObject).shape) return { next: (s as z.ZodObject).shape[key], label: key };
  if (def.type === "array") return { next: def.element, label: typeof key === "number" ? String(key) : "[]" };
  if (def.type === "record") return { next: def.valueType, label: "{key}" };
  return { next: undefined, label: typeof key === "number" ? String(key) : "(key)" };
}

/** The allowed keys of the object schema at `path`, or undefined when the schema there is not a plain object. */
function allowedKeysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] | undefined {
  let s: z.ZodType | undefined = schema;
  for (const key of path) s = step(s, key).next;
  const at = unwrap(s);
  return defOf(at).type === "object" ? Object.keys((at as z.ZodObject).shape) : undefined;
}

const MAX_LISTED_KEYS = 40;

/** Rewrites the issues of a failed parse so that they name only what the schema names. */
export function scrubIssues(schema: z.ZodType, err: z.ZodError): z.ZodError {
  const issues = err.issues.map((issue): z.core.$ZodIssue => {
    const labels: string[] = [];
    let s: z.ZodType | undefined = schema;
    for (const key of issue.path) {
      const { next, label } = step(s, key);
      labels.push(label);
      s = next;
    }
    if (issue.code !== "unrecognized_keys") return { ...issue, path: labels };
    const allowed = allowedKeysAt(schema, issue.path);
    const n = issue.keys.length;
    const list = allowed === undefined ? "" : allowed.length === 0 ? "; no keys are allowed here" : `; allowed: ${allowed.slice(0, MAX_LISTED_KEYS).join(", ")}`;
    return { ...issue, path: labels, keys: [], message: `${n} unknown key${n === 1 ? "" : "s"}${list}` };
  });
  return new z.ZodError(issues);
}

/** `schema.parse(value)` whose ZodError carries no text of the caller's (see above). */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw scrubIssues(schema, result.error);
  return result.data;
}

const isWellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

/**
 * Refuses strings with lone surrogates anywhere in a request's input (keys too). UTF-8 encoding
 * would silently turn them into U+FFFD: two different strings, one stored value (an email that
 * matches another, a name the audit trail spells differently). Records refused them field by
 * field; this holds for every route.
 */
export function assertWellFormedInput(value: unknown, where: string): void {
  // Iterative: a deeply nested body must not overflow the stack.
  const pending: unknown[] = [value];
  while (pending.length) {
    const v = pending.pop();
    if (typeof v === "string") {
      if (!isWellFormed(v)) {
        throw new Invalid(`the ${where} holds text that is not well-formed Unicode (a lone surrogate)`, {
          errors: [{ path: where, message: "must be well-formed Unicode text", code: "custom" }],
        });
      }
    } else if (Array.isArray(v)) pending.push(...v);
    else if (v !== null && typeof v === "object") for (const [k, x] of Object.entries(v as Record<string, unknown>)) pending.push(k, x);
  }
}
