/** The small part of oidc-provider 9's API the test IdP uses (the package ships no types). */
declare module "oidc-provider" {
  import type { IncomingMessage, ServerResponse } from "node:http";
  type KoaContext = {
    path: string;
    body: unknown;
    oidc: {
      provider: Provider;
      client?: { clientId: string };
      session?: { accountId?: string };
    };
  };
  export type Configuration = {
    clients: Record<string, unknown>[];
    jwks: { keys: Record<string, unknown>[] };
    cookies: { keys: string[] };
    claims: Record<string, string[] | null>;
    scopes: string[];
    features: Record<string, { enabled: boolean }>;
    interactions: { url: (ctx: KoaContext, interaction: { uid: string }) => string };
    findAccount: (ctx: KoaContext, sub: string) => Promise<{ accountId: string; claims: () => Record<string, unknown> } | undefined>;
    loadExistingGrant: (ctx: KoaContext) => Promise<unknown>;
    /** Outgoing requests (back-channel logout); only the answer's status is read. */
    fetch?: (url: string | URL, options: { method?: string; headers?: Headers; body?: URLSearchParams }) => Promise<{ status: number }>;
  };
  class Grant {
    constructor(opts: { clientId: string; accountId: string });
    addOIDCScope(scope: string): void;
    save(): Promise<string>;
  }
  export default class Provider {
    constructor(issuer: string, configuration: Configuration);
    Grant: typeof Grant;
    use(middleware: (ctx: KoaContext, next: () => Promise<void>) => Promise<void>): void;
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<{ uid: string; prompt: { name: string } }>;
    interactionFinished(req: IncomingMessage, res: ServerResponse, result: Record<string, unknown>, opts?: { mergeWithLastSubmission?: boolean }): Promise<void>;
  }
}
