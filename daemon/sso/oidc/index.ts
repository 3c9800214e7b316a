import { registerProviderKind } from "../providers.js";
import { oidcRedirectUri } from "./flow.js";
import { oidcConfigSchema, oidcSecretsSchema } from "./settings.js";

/** The "oidc" provider kind: its settings, its secrets, and the browser flow of its sign-in button. */
registerProviderKind("oidc", {
  configSchema: oidcConfigSchema,
  secretsSchema: oidcSecretsSchema,
  browserSignIn: (id) => ({ flow: "redirect", path: `/api/v1/sso/oidc/${id}/start` }),
  redirectUri: oidcRedirectUri,
});

export { startOidcSignIn, finishOidcSignIn, oidcEndSessionUrl, BROWSER_COOKIE } from "./flow.js";
