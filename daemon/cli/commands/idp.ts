import fs from "node:fs";
import type { Command } from "commander";
import { publicOrigin } from "../../config/public-url.js";
import type { Config } from "../../config/schema.js";
import type { ApplianceContext } from "../../context.js";
import { hostOperatorIn } from "../../kernel/actor.js";
import { AppError } from "../../kernel/errors.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import {
  checkProvider,
  createProvider,
  createProviderRequest,
  dryRunRules,
  listProviders,
  listRules,
  MetadataRefused,
  parseIdpMetadata,
  saveRulesRequest,
  updateProvider,
  type ProviderView,
  type RuleView,
} from "../../sso/index.js";
import { tenantByRef, unsealOptions, withHostOperator } from "../host-operator.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

/**
 * `wardkeep idp …`: a tenant's sign-in providers (docs/sso.md), through the same services as the
 * console's "Sign-in providers" page, as the host operator. Secrets (client secret, bind
 * password) come from files, never from the command line (other users of the host see argv).
 * A provider is added disabled: check it (`idp test`), then `idp enable`.
 */

/** The appliance's public address (server.publicUrl), which the redirect URIs to register at the IdP are made from. */
const applianceBase = (config: Config): string => publicOrigin(config);

function readFile(flag: string, file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? "cannot be read"}`);
  }
}

/** A secret from a file: the first line, without its line break. */
const secretFrom = (flag: string, file: string) => {
  const value = readFile(flag, file).split(/\r?\n/)[0]!;
  if (!value) throw new CliError(`${flag} ${file}: the file is empty`);
  return value;
};

/** The API's 400 in one line: the message and the first field it names (never a value). */
function oneLineProblem(err: unknown): never {
  if (err instanceof AppError) {
    const first = (err.extras.errors as { path: string; message: string }[] | undefined)?.[0];
    throw new CliError(first ? `${err.message}: ${first.path}: ${first.message}` : err.message);
  }
  throw err;
}

const when = (iso: string | null) => iso ?? "never";
const providerLine = (p: ProviderView) =>
  `${p.id}  ${p.kind.padEnd(4)} ${(p.enabled ? "enabled" : "disabled").padEnd(8)} ${String(p.linkedUsers).padStart(4)} linked  last sign-in ${when(p.lastSignInAt).padEnd(24)}  ${p.name}`;
const ruleLine = (r: RuleView) =>
  `${String(r.position + 1).padStart(3)}. ${r.source === "group" ? "group" : `claim ${r.claim}`} ${r.match} ${JSON.stringify(r.value)} -> ${r.role}${r.providerId ? ` (provider ${r.providerId})` : ""}${r.status === "pending" ? "  [pending a second admin's approval]" : ""}`;

type Common = { tenant: string; name: string; passphraseFile?: string; shareFile?: string[] };
type AddInput = { kind: "oidc" | "saml" | "ldap"; config: Record<string, unknown>; secrets?: Record<string, string> };

/** Creates the provider (disabled) and prints what to register at the IdP. */
async function add(cmd: Command, opts: Common, input: AddInput) {
  const global = cmd.optsWithGlobals<GlobalOptions>();
  const parsed = createProviderRequest.safeParse({ kind: input.kind, name: opts.name, config: input.config, ...(input.secrets ? { secrets: input.secrets } : {}) });
  if (!parsed.success) throw new CliError(`--${String(parsed.error.issues[0]!.path[0])}: ${parsed.error.issues[0]!.message}`);
  const provider = await withHostOperator({ unseal: true, passphraseFile: opts.passphraseFile, shareFile: opts.shareFile }, async (ctx) =>
    createProvider(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), parsed.data, SYSTEM_META, applianceBase(ctx.config)).catch(oneLineProblem),
  );
  printResult(global, { provider }, [
    `${provider.kind} provider "${provider.name}" added (${provider.id}), disabled: check it with \`wardkeep idp test ${provider.id} --tenant ${opts.tenant}\`, then enable it`,
    ...(provider.redirectUri ? [`register at the identity provider: ${provider.redirectUri}`] : []),
  ]);
}

const withTenant = (c: Command) => unsealOptions(c.requiredOption("--tenant <tenant>", "the tenant's id or slug"));

export function registerIdp(program: Command) {
  const idp = program.command("idp").description("a tenant's sign-in providers: OpenID Connect, SAML 2.0, LDAP / Active Directory (docs/sso.md)");

  idp
    .command("list")
    .description("the tenant's providers: id, kind, enabled, linked accounts, last sign-in, name")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .action(async (opts: { tenant: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const providers = await withHostOperator({ unseal: false }, async (ctx) =>
        listProviders(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), applianceBase(ctx.config)),
      );
      printResult(global, { providers }, providers.length ? providers.map(providerLine) : ["no sign-in providers in this tenant"]);
    });

  withTenant(
    idp
      .command("add-oidc")
      .description("add an OpenID Connect provider (Entra ID, Okta, Keycloak…), disabled until enabled")
      .requiredOption("--name <name>", "the sign-in button's label")
      .requiredOption("--issuer <url>", "the issuer URL (https)")
      .requiredOption("--client-id <id>", "the client registered at the IdP")
      .option("--client-secret-file <file>", "file whose first line is the client secret")
      .option("--scopes <scopes>", 'space-separated scopes, e.g. "openid profile email groups"')
      .option("--groups-claim <claim>", "the claim that carries the groups (default groups)"),
  ).action(async (opts: Common & { issuer: string; clientId: string; clientSecretFile?: string; scopes?: string; groupsClaim?: string }, cmd: Command) => {
    const config: Record<string, unknown> = { issuer: opts.issuer, clientId: opts.clientId };
    if (opts.scopes) config.scopes = opts.scopes.split(/\s+/).filter(Boolean);
    if (opts.groupsClaim) config.claims = { groups: opts.groupsClaim };
    if (!opts.clientSecretFile) config.tokenEndpointAuthMethod = "none";
    await add(cmd, opts, { kind: "oidc", config, ...(opts.clientSecretFile ? { secrets: { clientSecret: secretFrom("--client-secret-file", opts.clientSecretFile) } } : {}) });
  });

  withTenant(
    idp
      .command("add-saml")
      .description("add a SAML 2.0 provider (Entra ID, ADFS, Okta…) from its metadata or its settings, disabled until enabled")
      .requiredOption("--name <name>", "the sign-in button's label")
      .option("--idp-metadata-file <file>", "the IdP's metadata XML (entity id, sign-on and single logout URLs, signing certificates)")
      .option("--fingerprint <hex>", "with --idp-metadata-file: accept it only when a signing certificate has this SHA-256 fingerprint")
      .option("--idp-entity-id <id>", "the IdP's entity id (without metadata)")
      .option("--idp-sso-url <url>", "the IdP's HTTP-Redirect sign-on URL (without metadata)")
      .option("--idp-slo-url <url>", "the IdP's HTTP-Redirect single logout URL (without metadata; absent: no single logout)")
      .option("--idp-certificate-file <file>", "a PEM signing certificate to pin (without metadata); repeat for a rollover", (v: string, p: string[] = []) => [...p, v])
      .option("--groups-attribute <name>", "the attribute that carries the groups (default groups)")
      .option("--require-encrypted-assertions", "refuse assertions not encrypted to the appliance's encryption certificate (in its SP metadata)"),
  ).action(
    async (
      opts: Common & {
        idpMetadataFile?: string;
        fingerprint?: string;
        idpEntityId?: string;
        idpSsoUrl?: string;
        idpSloUrl?: string;
        idpCertificateFile?: string[];
        groupsAttribute?: string;
        requireEncryptedAssertions?: boolean;
      },
      cmd: Command,
    ) => {
      let idpSide: Record<string, unknown>;
      if (opts.idpMetadataFile) {
        try {
          const imported = parseIdpMetadata(readFile("--idp-metadata-file", opts.idpMetadataFile), opts.fingerprint ? { pinFingerprint: opts.fingerprint } : {});
          const { fingerprints: _shown, ...settings } = imported;
          idpSide = settings;
        } catch (err) {
          if (err instanceof MetadataRefused) throw new CliError(`--idp-metadata-file: ${err.message}`);
          throw err;
        }
      } else {
        if (!opts.idpEntityId || !opts.idpSsoUrl || !opts.idpCertificateFile?.length)
          throw new CliError("give --idp-metadata-file, or --idp-entity-id, --idp-sso-url and --idp-certificate-file", 2);
        idpSide = {
          idpEntityId: opts.idpEntityId,
          idpSsoUrl: opts.idpSsoUrl,
          ...(opts.idpSloUrl ? { idpSloUrl: opts.idpSloUrl } : {}),
          idpCertificates: opts.idpCertificateFile.map((f) => readFile("--idp-certificate-file", f)),
        };
      }
      const config = {
        ...idpSide,
        ...(opts.groupsAttribute ? { groupsAttribute: opts.groupsAttribute } : {}),
        ...(opts.requireEncryptedAssertions ? { requireEncryptedAssertions: true } : {}),
      };
      await add(cmd, opts, { kind: "saml", config });
    },
  );

  withTenant(
    idp
      .command("add-ldap")
      .description("add an LDAP / Active Directory provider (LDAPS or StartTLS only); the service account binds once before it is saved")
      .requiredOption("--name <name>", "the sign-in form's label")
      .requiredOption("--url <url>", "ldaps://host:636, or ldap://host:389 with --start-tls")
      .option("--start-tls", "upgrade an ldap:// connection with StartTLS")
      .option("--ca-file <file>", "PEM of the CA that issued the directory's certificate (default: the system store)")
      .option("--flavor <flavor>", "ad (default) or openldap")
      .requiredOption("--bind-dn <dn>", "the read-only service account that finds users")
      .requiredOption("--bind-password-file <file>", "file whose first line is the service account's password")
      .requiredOption("--user-base <dn>", "where users are searched")
      .option("--group-base <dn>", "where groups are searched (default: --user-base)")
      .option("--user-filter <filter>", "the user search, with {username} (default by flavor)"),
  ).action(
    async (
      opts: Common & {
        url: string;
        startTls?: boolean;
        caFile?: string;
        flavor?: string;
        bindDn: string;
        bindPasswordFile: string;
        userBase: string;
        groupBase?: string;
        userFilter?: string;
      },
      cmd: Command,
    ) => {
      const config: Record<string, unknown> = { url: opts.url, bindDn: opts.bindDn, userBase: opts.userBase };
      if (opts.startTls) config.startTls = true;
      if (opts.caFile) config.caPem = readFile("--ca-file", opts.caFile);
      if (opts.flavor) config.flavor = opts.flavor;
      if (opts.groupBase) config.groupBase = opts.groupBase;
      if (opts.userFilter) config.userFilter = opts.userFilter;
      await add(cmd, opts, { kind: "ldap", config, secrets: { bindPassword: secretFrom("--bind-password-file", opts.bindPasswordFile) } });
    },
  );

  for (const enabled of [true, false]) {
    withTenant(
      idp
        .command(enabled ? "enable" : "disable")
        .description(enabled ? "show the provider's button on the login page and accept sign-ins through it" : "refuse sign-ins through the provider (sessions already open stay)")
        .argument("<id>", "the provider's id (wardkeep idp list)"),
    ).action(async (id: string, opts: Omit<Common, "name">, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      if (!UUID.test(id)) throw new CliError("<id>: not a provider id (wardkeep idp list shows them)");
      const provider = await withHostOperator({ unseal: true, passphraseFile: opts.passphraseFile, shareFile: opts.shareFile }, async (ctx) =>
        updateProvider(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), id, { enabled }, SYSTEM_META, applianceBase(ctx.config)),
      );
      printResult(global, { provider }, `provider "${provider.name}" ${enabled ? "enabled: its button shows on the login page" : "disabled: sign-ins through it are refused"}`);
    });
  }

  idp
    .command("rules")
    .description(
      "the ordered claim/group -> role rules (first match wins); with --dry-run-file, what a proposed table would change for every account it decides, linked or provisioned by SCIM (nothing is saved)",
    )
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .option("--dry-run-file <file>", 'a proposed table as JSON: {"rules": [{"source": "group", "match": "equals", "value": "…", "role": "…"}, …]}')
    .action(async (opts: { tenant: string; dryRunFile?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      if (opts.dryRunFile) {
        let raw: unknown;
        try {
          raw = JSON.parse(readFile("--dry-run-file", opts.dryRunFile));
        } catch (err) {
          if (err instanceof CliError) throw err;
          throw new CliError(`--dry-run-file ${opts.dryRunFile}: not valid JSON`);
        }
        const proposed = saveRulesRequest.safeParse(raw);
        if (!proposed.success) throw new CliError(`--dry-run-file: ${proposed.error.issues[0]!.path.join(".")}: ${proposed.error.issues[0]!.message}`);
        const dry = await withHostOperator({ unseal: false }, async (ctx: ApplianceContext) =>
          dryRunRules(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), proposed.data.rules).catch(oneLineProblem),
        );
        const changed = dry.users.filter((u) => u.change !== "unchanged");
        printResult(global, { dryRun: dry }, [
          `${dry.users.length} ${dry.users.length === 1 ? "account" : "accounts"} under the rules (linked or provisioned by SCIM), ${changed.length} would change:`,
          ...changed.map((u) => `  ${u.email ?? u.userId}  ${u.currentRole} -> ${u.proposedRole ?? "no access"}  (${u.change.replace("_", " ")}, via ${u.providerName})`),
        ]);
        return;
      }
      const rules = await withHostOperator({ unseal: false }, async (ctx) => listRules(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id)));
      printResult(global, { rules }, rules.length ? rules.map(ruleLine) : ["no rules: nobody can sign in through an identity provider"]);
    });

  withTenant(
    idp
      .command("test")
      .description("check the provider can be used, without signing anyone in: OIDC discovery, the LDAP service account's bind, the SAML pinned certificates; exit 3 when not")
      .argument("<id>", "the provider's id (wardkeep idp list)"),
  ).action(async (id: string, opts: Omit<Common, "name">, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    if (!UUID.test(id)) throw new CliError("<id>: not a provider id (wardkeep idp list shows them)");
    const check = await withHostOperator({ unseal: true, passphraseFile: opts.passphraseFile, shareFile: opts.shareFile }, async (ctx) =>
      checkProvider(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), id),
    );
    const lines = [`${check.kind} provider "${check.name}": usable`, ...check.details.map((d) => `  ${d}`)];
    if (check.ok) return printResult(global, { check }, lines);
    // One line, as every failure (docs/cli.md); --json carries every detail.
    const error = `${check.kind} provider "${check.name}" is not usable: ${check.details.find((d) => /failed|not usable|NOT valid|cannot|no /.test(d)) ?? check.details[0]}`;
    if (global.json) process.stdout.write(JSON.stringify({ ok: false, error, check }) + "\n");
    else process.stderr.write(`wardkeep: ${error}\n`);
    process.exitCode = 3;
  });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
