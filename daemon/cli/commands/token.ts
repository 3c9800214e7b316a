import type { Command } from "commander";
import { createApiToken, createApiTokenRequest, listApiTokens, revokeApiToken, type ApiTokenView } from "../../auth/index.js";
import { hostOperatorIn } from "../../kernel/actor.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import { parseOptions, tenantByRef, withHostOperator } from "../host-operator.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function stateOf(t: ApiTokenView, now = new Date()): string {
  return t.revokedAt ? "revoked" : new Date(t.expiresAt) <= now ? "expired" : "active";
}

const line = (t: ApiTokenView) => `${t.id}  ${stateOf(t).padEnd(7)} ${t.prefix}…  ${t.role.padEnd(12)} expires ${t.expiresAt.slice(0, 10)}  ${t.name}  [${t.scopes.join(" ")}]`;

export function registerToken(program: Command) {
  const token = program.command("token").description("API tokens of a tenant's clinical applications (service accounts): create, list, revoke");

  token
    .command("create")
    .description("create a service account and its API token in a tenant; the token is printed once")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .requiredOption("--name <name>", 'what the application is, e.g. "EHR interface"')
    .requiredOption("--role <role>", "practitioner, front_desk or auditor (never administrative)")
    .option("--scope <scope>", "patient:read, note:write… or * for everything the role allows; repeat", collect)
    .option("--expires-in-days <days>", "1 to 365 (default 90)")
    .action(async (opts: { tenant: string; name: string; role: string; scope?: string[]; expiresInDays?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const input = parseOptions(
        createApiTokenRequest,
        {
          name: opts.name,
          role: opts.role,
          scopes: opts.scope ?? [],
          ...(opts.expiresInDays !== undefined ? { expiresInDays: /^\d+$/.test(opts.expiresInDays) ? Number(opts.expiresInDays) : opts.expiresInDays } : {}),
        },
        { name: "--name", role: "--role", scopes: "--scope", expiresInDays: "--expires-in-days" },
      );
      const created = await withHostOperator({ unseal: false }, async (ctx) => createApiToken(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), input, SYSTEM_META));
      printResult(global, created, [
        `API token "${created.apiToken.name}" created (${created.apiToken.id}), role ${created.apiToken.role}, scopes ${created.apiToken.scopes.join(" ")}, expires ${created.apiToken.expiresAt}`,
        "the token (shown once; send it as Authorization: Bearer <token>):",
        `  ${created.token}`,
      ]);
    });

  token
    .command("list")
    .description("a tenant's API tokens: state, prefix, role, expiry, scopes (never the token)")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .action(async (opts: { tenant: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const tokens = await withHostOperator({ unseal: false }, async (ctx) => listApiTokens(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id)));
      printResult(global, { tokens }, tokens.length ? tokens.map(line) : ["no API tokens in this tenant"]);
    });

  token
    .command("revoke")
    .description("revoke an API token at once and deactivate its service account")
    .argument("<id>", "the token's id (wardkeep token list)")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .action(async (id: string, opts: { tenant: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) throw new CliError("<id>: not a token id (wardkeep token list shows them)");
      const revoked = await withHostOperator({ unseal: false }, async (ctx) => revokeApiToken(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), id, SYSTEM_META));
      printResult(global, { token: revoked }, `API token "${revoked.name}" revoked; its service account is deactivated`);
    });
}
