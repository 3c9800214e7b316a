// PHI and secret redaction for anything that leaves the process as a log line.
//
// DESIGN.md: "no PHI at info level, ever". Two layers defend that promise:
//  1. key-based: a value stored under a key that names PHI or a secret is replaced wholesale,
//     whatever its type, so structured metadata is safe by construction;
//  2. pattern-based (scrubText): free strings are scanned for values that look like PHI
//     (emails, phones, dates of birth, SSNs, MRNs, addresses) or credentials (tokens, URL passwords).
// Patterns cannot recognise a bare name or a note body inside a sentence; callers must pass PHI as
// metadata under a sensitive key, never interpolate it into a message.
//
// Pure module: no winston import, so the audit, webhook and HTTP layers can reuse it.

export const REDACTED = "[REDACTED]";

/** Containers nested deeper than this are replaced by "[Truncated]" (log lines stay bounded). */
export const MAX_DEPTH = 8;

/** Key names (any casing, `_`/`-` separators ignored) whose value is always replaced. */
// prettier-ignore
export const SENSITIVE_KEYS: readonly string[] = Object.freeze([
  // Identity (HIPAA Safe Harbor identifiers, 45 CFR 164.514(b)(2))
  "name", "firstName", "lastName", "middleName", "maidenName", "nickname", "givenName",
  "familyName", "fullName", "patientName",
  "dob", "dateOfBirth", "birthDate", "birthdate", "birthday",
  "mrn", "medicalRecordNumber", "ssn", "socialSecurityNumber", "nationalId", "passportNumber",
  "insuranceNumber", "policyNumber", "healthPlanNumber", "accountNumber", "licenseNumber",
  // Contact
  "phone", "phones", "phoneNumber", "phoneNumbers", "mobile", "fax", "email", "emails",
  "emailAddress", "address", "addresses", "addressLine1", "addressLine2", "street",
  "streetAddress", "city", "postalCode", "postcode", "zip", "zipCode",
  // Clinical and free text
  "note", "notes", "body", "rawBody", "requestBody", "responseBody", "text", "transcript",
  "transcription", "content", "diagnosis", "diagnoses", "comment", "comments", "reason",
  "plaintext", "cleartext", "filename", "originalFilename", "originalName",
  // Database error details echo row values ("Key (email)=(...) already exists",
  // "Failing row contains (...)"); SQL and bind parameters carry the values being written.
  // pg's `where` can quote the failing statement with its literals.
  "detail", "where", "parameters", "bind", "values", "sql", "internalQuery", "query", "q",
  "search",
  // Credentials and key material
  "password", "passwords", "passphrase", "secret", "secrets", "token", "tokens", "accessToken",
  "refreshToken", "setupToken", "apiKey", "authorization", "cookie", "cookies", "setCookie",
  "otp", "totp", "code", "mfaCode", "totpCode", "otpCode", "verificationCode", "authCode",
  "recoveryCode", "recoveryCodes", "backupCode", "backupCodes", "share", "shares",
  "kek", "dek", "key", "privateKey", "secretKey", "encryptionKey", "signingKey", "hmacKey",
  "wrappedKey", "dataKey", "masterKey", "rootKey", "keyMaterial", "signature", "signatures",
]);

// Compound names such as `patientEmail`, `homePhone`, `clientSecret`, `csrfToken`.
// prettier-ignore
const SENSITIVE_SUFFIXES: readonly string[] = [
  "password", "passphrase", "token", "secret",
  "email", "emailaddress", "phone", "phonenumber", "mrn", "ssn", "dob", "dateofbirth",
  "birthdate", "firstname", "lastname", "givenname", "familyname", "fullname", "middlename",
  "patientname", "streetaddress", "homeaddress", "mailingaddress", "note", "notes",
  "diagnosis", "transcript",
];

export function normalizeKey(key: string): string {
  return key.toLowerCase().replace(/[\s._-]/g, "");
}

const SENSITIVE_KEY_SET: ReadonlySet<string> = new Set(SENSITIVE_KEYS.map(normalizeKey));

/** True when the value stored under `key` must never be logged. */
export function isSensitiveKey(key: string): boolean {
  const normalized = normalizeKey(key);
  if (SENSITIVE_KEY_SET.has(normalized)) return true;
  return SENSITIVE_SUFFIXES.some((suffix) => normalized.endsWith(suffix));
}

export interface RedactOptions {
  /**
   * Keep (scrubbed) Error stacks. Off by default: stacks add nothing for operators at info level
   * and are one more place where a message with PHI is repeated.
   */
  includeStack?: boolean;
  maxDepth?: number;
}

interface WalkContext {
  includeStack: boolean;
  maxDepth: number;
  // Only the current path, not every object seen: a shared (non-cyclic) reference is copied twice.
  ancestors: Set<object>;
}

/**
 * Deep copy of `value` that is safe to log: sensitive keys replaced by "[REDACTED]", strings
 * scrubbed, Errors reduced to `{ name, message, code }`, cycles and excessive depth cut.
 * The result is plain JSON-compatible data.
 */
export function redactValue(value: unknown, options: RedactOptions = {}): unknown {
  const ctx: WalkContext = {
    includeStack: options.includeStack ?? false,
    maxDepth: options.maxDepth ?? MAX_DEPTH,
    ancestors: new Set(),
  };
  try {
    return walk(value, 0, ctx);
  } catch {
    // A log call must never throw; losing one value beats crashing the request.
    return "[Unloggable]";
  }
}

function walk(value: unknown, depth: number, ctx: WalkContext): unknown {
  switch (typeof value) {
    case "string":
      return scrubText(value);
    case "number":
    case "boolean":
    case "undefined":
      return value;
    case "bigint":
      return value.toString();
    case "symbol":
      return value.toString();
    case "function":
      return "[Function]";
  }
  if (value === null) return null;
  const obj = value as object;
  if (obj instanceof Date) {
    return Number.isNaN(obj.getTime()) ? "Invalid Date" : obj.toISOString();
  }
  if (ctx.ancestors.has(obj)) return "[Circular]";
  if (depth >= ctx.maxDepth) return "[Truncated]";
  if (ArrayBuffer.isView(obj) || obj instanceof ArrayBuffer) {
    // Raw bytes are ciphertext, keys or attachments: their size is all an operator needs.
    return `[Binary ${obj.byteLength} bytes]`;
  }

  ctx.ancestors.add(obj);
  try {
    if (obj instanceof Error) return walkError(obj, depth, ctx);
    if (Array.isArray(obj)) return obj.map((item) => walk(item, depth + 1, ctx));
    if (obj instanceof Set) return [...obj].map((item) => walk(item, depth + 1, ctx));
    if (obj instanceof Map) {
      const out: Record<string, unknown> = {};
      for (const [k, v] of obj) out[String(k)] = walkProperty(String(k), v, depth, ctx);
      return out;
    }
    const toJSON = (obj as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === "function") {
      // Sequelize models, URLs, Buffers-like wrappers: redact what they would serialise to.
      let json: unknown;
      try {
        json = toJSON.call(obj);
      } catch {
        return "[Unserializable]";
      }
      if (json !== obj) return walk(json, depth, ctx);
    }
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(obj)) {
      let v: unknown;
      try {
        v = (obj as Record<string, unknown>)[key];
      } catch {
        v = "[Unreadable]";
      }
      out[key] = walkProperty(key, v, depth, ctx);
    }
    return out;
  } finally {
    ctx.ancestors.delete(obj);
  }
}

function walkProperty(key: string, value: unknown, depth: number, ctx: WalkContext): unknown {
  if (isSensitiveKey(key)) {
    // Keep "absent" visible (useful when debugging a missing header) without revealing anything.
    return value === null || value === undefined ? value : REDACTED;
  }
  return walk(value, depth + 1, ctx);
}

function walkError(err: Error, depth: number, ctx: WalkContext): Record<string, unknown> {
  // Own enumerable fields of errors (pg's `detail`, sequelize's `sql`, axios' `config`) are
  // deliberately dropped: they echo request data and row values.
  const out: Record<string, unknown> = {
    name: scrubText(String(err.name)),
    message: scrubText(String(err.message)),
  };
  const extra = err as Error & {
    code?: unknown;
    status?: unknown;
    statusCode?: unknown;
  };
  if (typeof extra.code === "string") out.code = scrubText(extra.code);
  else if (typeof extra.code === "number") out.code = extra.code;
  if (typeof extra.status === "number") out.status = extra.status;
  if (typeof extra.statusCode === "number") out.statusCode = extra.statusCode;
  if (ctx.includeStack && typeof err.stack === "string") out.stack = scrubText(err.stack);
  if (err.cause !== undefined) out.cause = walk(err.cause, depth + 1, ctx);
  if (err instanceof AggregateError && Array.isArray(err.errors)) {
    out.errors = walk(err.errors, depth + 1, ctx);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Free-text scrubbing

type Rule = readonly [RegExp, (match: string, ...groups: string[]) => string];

// Private-use characters cannot occur in the patterns below, so protected spans stay untouched.
const HOLD_OPEN = "\uE000";
const HOLD_CLOSE = "\uE001";
const HOLD_RE = /\uE000(\d+)\uE001/g;

// Identifiers and event times are needed to correlate lines and are not PHI; they are set
// aside before scrubbing so the token and date patterns cannot eat them.
const UUID_RE = /\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b/g;
const ISO_TIMESTAMP_RE = /\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?(?!\d)/g;
// OpenSSH host-key fingerprints ("SHA256:" + 43 unpadded base64 characters) are public: an
// operator compares them with `ssh-keygen -lf` output, so the token rule must not eat them.
const SSH_FINGERPRINT_RE = /\bSHA256:[A-Za-z0-9+/]{43}(?![A-Za-z0-9+/=])/g;

const MONTHS = "(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)";

function isMonthDay(month: string, day: string): boolean {
  const m = Number(month);
  const d = Number(day);
  return m >= 1 && m <= 12 && d >= 1 && d <= 31;
}

function looksRandom(s: string): boolean {
  const hasDigit = /\d/.test(s);
  const hasUpper = /[A-Z]/.test(s);
  const hasLower = /[a-z]/.test(s);
  if (!hasDigit || !(hasUpper || hasLower)) return false;
  // snake_case / kebab-case identifiers in a single case are words, not secrets;
  // random base64url is mixed-case, and base32/base36 secrets have no separators.
  return (hasUpper && hasLower) || !/[_-]/.test(s);
}

// Words that open a sentence about a secret rather than the secret itself.
// prettier-ignore
const PROSE_OPENERS: ReadonlySet<string> = new Set([
  "run", "use", "enter", "type", "set", "see", "give", "provide", "supply", "read", "wait", "waiting",
  "none", "not", "no", "missing", "required", "wrong", "incorrect", "invalid", "expired", "empty",
  "changed", "unchanged", "reset", "accepted", "rejected", "too", "must", "is", "was", "the", "a", "an",
]);

/** True when the text after "password:" is prose (an instruction, a verdict, a command in backticks). */
function isProse(value: string): boolean {
  const trimmed = value.trim();
  if (trimmed.startsWith("`")) return true;
  // Lower case only: "Wrong" or "RUN" could be the start of a chosen passphrase.
  const first = trimmed.split(/\s+/)[0]!.replace(/[.!]$/, "");
  return PROSE_OPENERS.has(first);
}

const RULES: readonly Rule[] = [
  // Credentials in connection strings (postgres://user:pass@host) — before the email rule,
  // which would otherwise see "pass@host".
  [/\b([a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^\s:/@]*):([^\s@/]+)@/g, (_m, prefix) => `${prefix}:****@`],
  [/\bBearer\s+[A-Za-z0-9\-._~+/]+=*/gi, () => "Bearer [token]"],
  [/\bBasic\s+[A-Za-z0-9+/]{8,}={0,2}/g, () => "Basic [token]"],
  [/\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g, () => "[token]"],
  // Labelled MRNs come before the generic key=value rule so they read "MRN [mrn]".
  [/\b(?:MRN|medical[ _-]?record[ _-]?(?:number|no\.?|#))\s*[:=#-]?\s*(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]*/gi, () => "MRN [mrn]"],
  [/\bSSN\s*[:=#-]?\s*\d{3}[- ]?\d{2}[- ]?\d{4}(?!\d)/gi, () => "SSN [ssn]"],
  // JSON fragments inside messages (a stringified request body in an error message).
  [/"([A-Za-z_][\w .-]{0,63})"(\s*:\s*)("(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*|true|false)/g, (m, key, sep) => (isSensitiveKey(key) ? `"${key}"${sep}"${REDACTED}"` : m)],
  // key=value pairs: query strings, libpq conninfo, logfmt.
  [/(?<![\w.-])([A-Za-z_][\w.-]{0,63})=("[^"]*"|'[^']*'|[^\s&,;"'<>]+)/g, (m, key) => (isSensitiveKey(key) ? `${key}=${REDACTED}` : m)],
  [/[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/g, () => "[email]"],
  [/(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])/g, () => "[ssn]"],
  // International numbers: "+" then 8–15 digits (E.164) with optional separators.
  [
    /(?<![\w+])\+\d{1,3}(?:[\s.-]?(?:\(\d{1,4}\)|\d{1,4})){2,6}(?!\d)/g,
    (m) => {
      const digits = m.replace(/\D/g, "").length;
      return digits >= 8 && digits <= 15 ? "[phone]" : m;
    },
  ],
  // North American numbers: (555) 123-4567, 555-123-4567, 555.123.4567, 1-555-123-4567.
  [/(?<![\w+])(?:1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\d)/g, () => "[phone]"],
  // Dates that could be a date of birth. Full timestamps were set aside above.
  [/(?<![\w./-])(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?![\w]|[-/.]\d)/g, (m, _y, _sep, month, day) => (isMonthDay(month, day) ? "[date]" : m)],
  [/(?<![\w./-])(\d{1,2})([-/.])(\d{1,2})\2(\d{4})(?![\w]|[-/.]\d)/g, (m, a, _sep, b) => (isMonthDay(a, b) || isMonthDay(b, a) ? "[date]" : m)],
  [/(?<![\w./-])(\d{1,2})\/(\d{1,2})\/(\d{2})(?![\w]|[-/.]\d)/g, (m, a, b) => (isMonthDay(a, b) || isMonthDay(b, a) ? "[date]" : m)],
  [new RegExp(`\\b(?:\\d{1,2}(?:st|nd|rd|th)?\\s+${MONTHS}\\.?,?\\s+\\d{4}|${MONTHS}\\.?\\s+\\d{1,2}(?:st|nd|rd|th)?,?\\s+\\d{4})\\b`, "gi"), () => "[date]"],
  // Street addresses ("1742 Quince Orchard Lane").
  [
    /\b\d{1,6}\s+(?:[A-Z][A-Za-z'.-]*\s+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Circle|Parkway|Pkwy|Highway|Hwy|Square|Trail|Crescent|Close)\b\.?/g,
    () => "[address]",
  ],
  // Labelled values in prose ("patient name: ...", "password: ..."); values already replaced
  // by an earlier rule ("[email]") are left alone.
  [/\b((?:patient|full|first|last|given|family|middle)[ _-]?name|date of birth|dob|birth ?date)(\s*:\s*)(?!\[)[^,;\r\n]{1,80}/gi, (_m, label, sep) => `${label}${sep}${REDACTED}`],
  // A password or passphrase after its label is redacted to the end of the clause (a
  // passphrase may be several words), unless the clause is the rest of a sentence about it:
  // an instruction ("passphrase: run `wardkeep unseal`") or a verdict ("password: wrong").
  [/\b(password|passphrase)(\s*:\s*)(?!\[)([^,;\r\n]{1,80})/gi, (m, label, sep, value) => (isProse(value) ? m : `${label}${sep}${REDACTED}`)],
  // Secrets: hex keys/hashes, random base64url/base32, padded or '+'-bearing base64.
  [/\b[0-9a-fA-F]{32,}\b/g, () => "[token]"],
  [/(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,}={0,2}(?![A-Za-z0-9_=-])/g, (m) => (looksRandom(m) ? "[token]" : m)],
  [/(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{32,}={0,2}(?![A-Za-z0-9+/=])/g, (m) => ((m.includes("+") || m.endsWith("=")) && looksRandom(m) ? "[token]" : m)],
];

/** Replaces PHI- and credential-shaped substrings of a free string. Idempotent. */
export function scrubText(text: string): string {
  if (text.length === 0) return text;
  const held: string[] = [];
  const hold = (m: string): string => {
    held.push(m);
    return `${HOLD_OPEN}${held.length - 1}${HOLD_CLOSE}`;
  };
  let out = text.replace(/[\uE000\uE001]/g, "");
  out = out.replace(UUID_RE, hold).replace(ISO_TIMESTAMP_RE, hold).replace(SSH_FINGERPRINT_RE, hold);
  for (const [pattern, replace] of RULES) {
    out = out.replace(pattern, replace as (match: string, ...rest: unknown[]) => string);
  }
  return out.replace(HOLD_RE, (_m, index: string) => held[Number(index)] ?? "");
}
