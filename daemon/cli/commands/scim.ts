import type { Command } from "commander";
import { createScimToken, createScimTokenRequest, listScimTokens, revokeScimToken, type ScimTokenRes } from "../../scim/index.js";
import { hostOperatorIn } from "../../kernel/actor.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import { parseOptions, tenantByRef, withHostOperator } from "../host-operator.js";
import { publicOrigin } from "../../config/public-url.js";
import type { Config } from "../../config/schema.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

/** The SCIM base URL at the appliance's public address (server.publicUrl), as the identity provider is to be given it. */
function scimBaseUrl(config: Config): string {
  return `${publicOrigin(config)}/scim/v2`;
}

const line = (t: ScimTokenRes) =>
  `${t.id}  ${(t.revokedAt ? "revoked" : "active").padEnd(7)} ${t.prefix}…  default ${t.defaultRole.padEnd(12)} last used ${t.lastUsedAt ?? "never"}  ${t.name}`;

export function registerScim(program: Command) {
  const scim = program.command("scim").description("SCIM 2.0 provisioning (docs/scim.md)");
  const token = scim.command("token").description("a tenant's SCIM tokens, the bearer secrets its identity provider provisions accounts with");

  token
    .command("create")
    .description("create a SCIM token for a tenant; the token is printed once")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .requiredOption("--name <name>", 'which provisioning client holds it, e.g. "Entra ID"')
    .option("--default-role <role>", "role of accounts it creates until a group rule assigns one: practitioner (default), front_desk or auditor")
    .action(async (opts: { tenant: string; name: string; defaultRole?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const input = parseOptions(
        createScimTokenRequest,
        { name: opts.name, ...(opts.defaultRole !== undefined ? { defaultRole: opts.defaultRole } : {}) },
        { name: "--name", defaultRole: "--default-role" },
      );
      const created = await withHostOperator({ unseal: false }, async (ctx) => ({
        ...(await createScimToken(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), input, SYSTEM_META)),
        baseUrl: scimBaseUrl(ctx.config),
      }));
      printResult(global, created, [
        `SCIM token "${created.scimToken.name}" created (${created.scimToken.id}), default role ${created.scimToken.defaultRole}`,
        `SCIM base URL (tenant URL): ${created.baseUrl}`,
        "the token (shown once; the identity provider sends it as Authorization: Bearer <token>):",
        `  ${created.token}`,
      ]);
    });

  token
    .command("list")
    .description("a tenant's SCIM tokens: state, prefix, default role, last use (never the token)")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .action(async (opts: { tenant: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const tokens = await withHostOperator({ unseal: false }, async (ctx) => listScimTokens(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id)));
      printResult(global, { tokens }, tokens.length ? tokens.map(line) : ["no SCIM tokens in this tenant"]);
    });

  token
    .command("revoke")
    .description("revoke a SCIM token; it is refused on its next request on every replica")
    .argument("<id>", "the token's id (wardkeep scim token list)")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .action(async (id: string, opts: { tenant: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) throw new CliError("<id>: not a SCIM token id (wardkeep scim token list shows them)");
      const revoked = await withHostOperator({ unseal: false }, async (ctx) => revokeScimToken(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), id, SYSTEM_META));
      printResult(global, { token: revoked }, `SCIM token "${revoked.name}" revoked`);
    });
}
