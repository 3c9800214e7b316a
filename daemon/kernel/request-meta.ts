import type { Request, Response } from "express";

/**
 * Where a request came from, passed from routes into services for the audit trail. It lives in
 * the kernel because every capability's routes hand it to their services, and none of them should
 * import another capability to name it.
 */
export type RequestMeta = { sourceIp: string | null; userAgent: string | null; requestId: string | null };

export function requestMeta(req: Request, res: Response): RequestMeta {
  return {
    // req.ip honours server.trustedProxies (X-Forwarded-For) and the PROXY header, so behind the hospital's proxy this is the client.
    sourceIp: req.ip ?? req.socket.remoteAddress ?? null,
    userAgent: req.get("user-agent")?.slice(0, 512) ?? null,
    requestId: (res.locals.requestId as string | undefined) ?? null,
  };
}

/** Services called outside HTTP (jobs, CLI, test factories). */
export const SYSTEM_META: RequestMeta = { sourceIp: null, userAgent: null, requestId: null };
