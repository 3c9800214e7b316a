import { defineRoute } from "../kernel/define-route.js";
import "./kinds.js";
import { ldapRoutes } from "./ldap/routes.js";
import { publicProvidersOf } from "./providers.js";
import { samlPostRoutes, samlRoutes } from "./saml/routes.js";
import { publicProviderList, publicProvidersQuery } from "./schema.js";

/** The sso capability's routes (docs/sso.md), mounted by daemon/http/app.ts. */
export const ssoRoutes = [
  defineRoute(
    {
      method: "get",
      path: "/sso/providers",
      action: "public",
      tag: "identity",
      summary: "The sign-in buttons of a tenant's login page: its enabled identity providers and how each signs in",
      query: publicProvidersQuery,
      response: publicProviderList,
    },
    ({ ctx, query }) => publicProvidersOf(ctx, query.tenant),
  ),
  ...ldapRoutes,
  ...samlRoutes,
];

/** Routes that take a non-JSON body (the SAML ACS form post): mounted before the JSON-only gate. */
export { samlPostRoutes as ssoFormRoutes };
