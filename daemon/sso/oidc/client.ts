import * as oidc from "openid-client";
import type { ApplianceContext } from "../../context.js";
import type { LoadedProvider } from "../providers.js";
import type { OidcConfig, OidcSecrets } from "./settings.js";

/**
 * openid-client `Configuration`s per provider: discovery (issuer validated against the document,
 * OpenID Connect Discovery 1.0 §4.3), the client's authentication at the token endpoint, the ID
 * token signing algorithm and the clock bounds. Cached per replica for `sso.discoveryCacheMinutes`,
 * keyed by the provider's settings, so an edit takes effect at once.
 */
type Cached = { key: string; until: number; server: Promise<oidc.ServerMetadata> };
const cache = new Map<string, Cached>();

const isLoopbackHttp = (issuer: URL) => issuer.protocol === "http:";

function clientAuth(settings: OidcConfig, secrets: OidcSecrets | null): oidc.ClientAuth {
  switch (settings.tokenEndpointAuthMethod) {
    case "none":
      return oidc.None();
    case "client_secret_post":
      return oidc.ClientSecretPost(secrets?.clientSecret);
    case "client_secret_basic":
      return oidc.ClientSecretBasic(secrets?.clientSecret);
  }
}

/** The signing algorithm ID tokens must carry: the configured one, else the first the IdP lists; `none` (and shared-secret HMAC) never. */
export function idTokenAlg(settings: OidcConfig, supported: readonly string[] | undefined): string {
  if (settings.idTokenSigningAlg) return settings.idTokenSigningAlg;
  const usable = (supported ?? ["RS256"]).filter((a) => a !== "none" && !a.startsWith("HS"));
  return usable[0] ?? "RS256";
}

/** Discovery: the document is fetched from the issuer and its `issuer` must equal it (openid-client checks). */
async function discover(ctx: ApplianceContext, provider: LoadedProvider<OidcConfig, OidcSecrets>): Promise<oidc.ServerMetadata> {
  const settings = provider.config;
  const issuer = new URL(settings.issuer);
  const options: oidc.DiscoveryRequestOptions = {
    timeout: ctx.config.sso.requestTimeoutSeconds,
    // Plain HTTP only for an IdP on this host's loopback (the settings schema refuses any other).
    ...(isLoopbackHttp(issuer) ? { execute: [oidc.allowInsecureRequests] } : {}),
  };
  const discovered = await oidc.discovery(issuer, settings.clientId, undefined, clientAuth(settings, provider.secrets), options);
  return { ...discovered.serverMetadata() };
}

/**
 * The provider's Configuration, judged by the appliance's clock: openid-client checks exp/iat
 * against the system clock plus `clockSkew`, so the skew carries the difference to `ctx.clock`
 * (the one clock every expiry in Wardkeep is judged by), and `clockTolerance` is the provider's
 * bound on clock difference. The discovery document is cached per replica for
 * `sso.discoveryCacheMinutes`, keyed by the provider's settings, so an edit takes effect at once.
 */
export async function oidcConfiguration(ctx: ApplianceContext, provider: LoadedProvider<OidcConfig, OidcSecrets>): Promise<oidc.Configuration> {
  const settings = provider.config;
  const key = JSON.stringify([settings, provider.secrets?.clientSecret ?? null]);
  const now = Date.now();
  let entry = cache.get(provider.id);
  if (!entry || entry.key !== key || entry.until < now) {
    entry = { key, until: now + ctx.config.sso.discoveryCacheMinutes * 60_000, server: discover(ctx, provider) };
    cache.set(provider.id, entry);
    // A failed discovery is not cached: the next sign-in tries again.
    entry.server.catch(() => cache.delete(provider.id));
  }
  const server = await entry.server;
  const metadata: Partial<oidc.ClientMetadata> = {
    client_id: settings.clientId,
    ...(provider.secrets?.clientSecret ? { client_secret: provider.secrets.clientSecret } : {}),
    id_token_signed_response_alg: idTokenAlg(settings, server.id_token_signing_alg_values_supported),
    [oidc.clockTolerance]: settings.clockToleranceSeconds,
    [oidc.clockSkew]: Math.round((ctx.clock.now().getTime() - Date.now()) / 1000),
  };
  const config = new oidc.Configuration(server, settings.clientId, metadata, clientAuth(settings, provider.secrets));
  if (isLoopbackHttp(new URL(settings.issuer))) oidc.allowInsecureRequests(config);
  config.timeout = ctx.config.sso.requestTimeoutSeconds;
  return config;
}

/** Forgets a provider's cached discovery (after an edit or delete). */
export function forgetOidcConfiguration(providerId: string): void {
  cache.delete(providerId);
}
