/**
 * The only module that calls fetch. It sends JSON, carries the CSRF token for cookie-session
 * writes, and turns RFC 9457 problem+json answers into ApiError with a message for people.
 * Every answer is also shown to the listeners registered with `onApiResponse` (the session
 * store watches for "your session ended" and for the support-access header there).
 */
export type Problem = {
  type: string;
  title: string;
  status: number;
  detail?: string;
  requestId?: string;
  errors?: { path: string; message: string }[];
  /** Why a 401 happened: idle_timeout, session_expired, session_revoked, mfa_required, invalid_code… */
  reason?: string;
  /** Present on step-up problems the person can satisfy with a fresh code. */
  stepUp?: { maxAgeSeconds: number };
  [extra: string]: unknown;
};

export const STEP_UP_REQUIRED = "urn:wardkeep:problem:step-up-required";

export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    super(messageFor(problem));
  }
  get status() {
    return this.problem.status;
  }
  get type() {
    return this.problem.type;
  }
  get reason(): string | undefined {
    return this.problem.reason;
  }
  /** A sensitive action that a fresh TOTP or recovery code would allow. */
  get stepUpPossible(): boolean {
    return this.problem.type === STEP_UP_REQUIRED && this.problem.stepUp !== undefined;
  }
}

function sentence(text: string): string {
  return text ? text[0]!.toUpperCase() + text.slice(1) : text;
}

function messageFor(p: Problem): string {
  const fields = p.errors?.map((e) => `${e.path}: ${e.message}`).join("; ");
  const main = sentence(p.detail ?? p.title);
  const text = [main, fields].filter(Boolean).join(" — ");
  // A request id lets IT find the server's log line for a failure nobody can explain from here.
  return p.status >= 500 && p.requestId ? `${text} (request ${p.requestId})` : text;
}

/** The message to show for anything a call may throw. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

let csrfToken: string | undefined;
export function setCsrfToken(token: string | undefined) {
  csrfToken = token;
}

/** The header the daemon puts on every response given under support access. */
export const SUPPORT_ACCESS_HEADER = "Wardkeep-Support-Access";

export type ApiResponseInfo = { method: string; path: string; status: number; supportAccess: string | null; problem?: Problem };
type Listener = (info: ApiResponseInfo) => void;
const listeners = new Set<Listener>();

/** Observe every answer (status, support-access header, problem). Returns the unsubscribe. */
export function onApiResponse(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function parse(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrfToken && method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  } catch {
    throw new ApiError({ type: "about:blank", title: "The appliance cannot be reached; check the network and try again", status: 0 });
  }
  const data = parse(await res.text()) as (Problem & Record<string, unknown>) | undefined;
  const problem = !res.ok ? (data?.type ? (data as Problem) : { type: "about:blank", title: res.statusText || `HTTP ${res.status}`, status: res.status }) : undefined;
  const info: ApiResponseInfo = { method, path, status: res.status, supportAccess: res.headers.get(SUPPORT_ACCESS_HEADER), ...(problem ? { problem } : {}) };
  for (const listener of listeners) listener(info);
  if (problem) throw new ApiError(problem);
  return data as T;
}

/** GET for endpoints whose body matters whatever the status (/readyz answers 503 with its checks). */
export async function probe<T>(path: string): Promise<{ status: number; data: T | undefined }> {
  try {
    const res = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    return { status: res.status, data: parse(await res.text()) as T | undefined };
  } catch {
    return { status: 0, data: undefined };
  }
}
