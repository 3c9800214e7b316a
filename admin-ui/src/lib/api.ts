/**
 * The only module that calls fetch. It sends JSON, carries the CSRF token for cookie-session
 * writes, and turns RFC 9457 problem+json answers into ApiError with a message for people.
 */
export type Problem = { type: string; title: string; status: number; detail?: string; requestId?: string; errors?: { path: string; message: string }[] };

export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    super(messageFor(problem));
  }
  get status() {
    return this.problem.status;
  }
}

function messageFor(p: Problem): string {
  const fields = p.errors?.map((e) => `${e.path}: ${e.message}`).join("; ");
  return [p.detail ?? p.title, fields].filter(Boolean).join(" — ");
}

let csrfToken: string | undefined;
export function setCsrfToken(token: string | undefined) {
  csrfToken = token;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrfToken && method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const text = await res.text();
  const data = text ? JSON.parse(text) : undefined;
  if (!res.ok) {
    throw new ApiError(data?.type ? (data as Problem) : { type: "about:blank", title: res.statusText, status: res.status });
  }
  return data as T;
}
