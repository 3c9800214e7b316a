import { Invalid } from "../kernel/errors.js";
import { registerProviderKind } from "./providers.js";
import { ldapProviderConfig, ldapSecrets } from "./ldap/config.js";
import { probeDirectory } from "./ldap/directory.js";
import { samlProviderConfig, spUrls } from "./saml/config.js";

/**
 * The provider kinds of the directory and SAML protocol modules, registered once when the sso
 * capability loads (docs/sso.md).
 */
registerProviderKind("ldap", {
  configSchema: ldapProviderConfig,
  secretsSchema: ldapSecrets,
  browserSignIn: (id) => ({ flow: "password", path: `/api/v1/sso/ldap/${id}/login` }),
  // Saving settings the directory would refuse helps nobody: bind as the service account first.
  validate: async (_ctx, config, secrets) => {
    if (!secrets)
      throw new Invalid("an LDAP provider needs the service account's password (secrets.bindPassword)", { errors: [{ path: "secrets.bindPassword", message: "required" }] });
    const probe = await probeDirectory(config, secrets);
    if (!probe.ok)
      throw new Invalid(`the directory could not be used: ${probe.reason}`, { errors: [{ path: "config.url", message: "directory not reachable or service account refused" }] });
  },
});

registerProviderKind("saml", {
  configSchema: samlProviderConfig,
  browserSignIn: (id) => ({ flow: "redirect", path: `/api/v1/sso/saml/${id}/login` }),
  // The ACS URL the assertions are checked against, made from the appliance's public address.
  redirectUri: (base, id, config) => spUrls(base, config, id).acs,
});
