import type { Config } from "./schema.js";

/**
 * The appliance's one public address (`server.publicUrl`; docs/hardening.md "Public address"):
 * what redirects, invite links, SCIM's base URL, OIDC redirect URIs and SAML SP URLs are made
 * from. Never a request's Host header: a reflected Host lets whoever can set it (a rogue proxy, a
 * poisoned cache) put a look-alike site into links and into the URLs an IdP posts assertions to.
 * Unset, it is `https://<server.publicHostname>` and the port the HTTPS listener got.
 */
export function publicOrigin(config: Pick<Config, "server">, listeningPort?: number): string {
  if (config.server.publicUrl) return config.server.publicUrl;
  const port = listeningPort ?? config.server.port;
  return `https://${config.server.publicHostname}${port === 443 || port === 0 ? "" : `:${port}`}`;
}

/** The public address of a running appliance: `ctx.publicUrl` once its listener is up, else from the configuration. */
export function appliancePublicUrl(ctx: { config: Pick<Config, "server">; publicUrl?: string }): string {
  return ctx.publicUrl ?? publicOrigin(ctx.config);
}
