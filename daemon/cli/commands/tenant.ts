import type { Command } from "commander";
import { createTenant, createTenantRequest, listTenants, updateTenant, updateTenantRequest, type TenantView } from "../../access/index.js";
import { loadConfig } from "../../config/load.js";
import { HOST_OPERATOR } from "../../kernel/actor.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import { inviteLink, parseOptions, tenantByRef, unsealOptions, withHostOperator } from "../host-operator.js";
import type { UnsealOpts } from "../offline-context.js";
import { printResult, type GlobalOptions } from "../output.js";

const line = (t: TenantView) => `${t.slug.padEnd(24)} ${t.status.padEnd(9)} ${t.id}  ${t.name}`;

export function registerTenant(program: Command) {
  const tenant = program.command("tenant").description("tenants (a hospital, clinic or department): create, list, rename, suspend, resume");

  unsealOptions(
    tenant
      .command("create")
      .description("create a tenant; with --owner-email, also its first owner's invite (the link is printed once)")
      .requiredOption("--name <name>", 'display name, e.g. "St. Mary\'s Cardiology"')
      .option("--slug <slug>", "short unique handle (lowercase letters, digits, dashes); default: made from the name")
      .option("--owner-email <email>", "work email of the first owner; needs the key store unsealed (it signs the invite link)")
      .option("--no-mfa", "do not require an authenticator app of every account (on by default; the security settings change it per role)"),
  ).action(async (opts: { name: string; slug?: string; ownerEmail?: string; mfa: boolean } & UnsealOpts, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const config = loadConfig();
    const input = parseOptions(
      createTenantRequest,
      { name: opts.name, slug: opts.slug, ownerEmail: opts.ownerEmail, mfaRequired: opts.mfa },
      { name: "--name", slug: "--slug", ownerEmail: "--owner-email" },
    );
    const created = await withHostOperator({ ...opts, unseal: opts.ownerEmail !== undefined }, (ctx) => createTenant(ctx, HOST_OPERATOR, input, SYSTEM_META));
    const { ownerInvite, ...view } = created;
    const link = ownerInvite ? inviteLink(config, ownerInvite.token) : null;
    printResult(global, { tenant: view, ownerInvite: ownerInvite ? { ...ownerInvite, link } : null }, [
      `tenant "${view.name}" created (slug ${view.slug}, id ${view.id})`,
      ...(ownerInvite
        ? [`owner invite for ${ownerInvite.email}, valid until ${ownerInvite.expiresAt}; send this link (shown once):`, `  ${link}`]
        : [`next: invite its first owner (wardkeep user invite --tenant ${view.slug} --role owner --email EMAIL, or Users & invites in the console)`]),
    ]);
  });

  tenant
    .command("list")
    .description("every tenant with its status")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const tenants = await withHostOperator({ unseal: false }, (ctx) => listTenants(ctx, HOST_OPERATOR));
      printResult(global, { tenants }, tenants.length ? tenants.map(line) : ["no tenants yet: wardkeep tenant create --name NAME --owner-email EMAIL"]);
    });

  tenant
    .command("rename")
    .description("give a tenant a new display name (its slug and id stay)")
    .argument("<tenant>", "id or slug")
    .requiredOption("--name <name>", "the new display name")
    .action(async (ref: string, opts: { name: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const input = parseOptions(updateTenantRequest, { name: opts.name }, { name: "--name" });
      const updated = await withHostOperator({ unseal: false }, async (ctx) => updateTenant(ctx, HOST_OPERATOR, (await tenantByRef(ctx, ref)).id, input, SYSTEM_META));
      printResult(global, { tenant: updated }, `tenant ${updated.slug} is now called "${updated.name}"`);
    });

  const setStatus = (status: "active" | "suspended") => async (ref: string, _opts: unknown, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const updated = await withHostOperator({ unseal: false }, async (ctx) => updateTenant(ctx, HOST_OPERATOR, (await tenantByRef(ctx, ref)).id, { status }, SYSTEM_META));
    printResult(
      global,
      { tenant: updated },
      status === "suspended"
        ? `tenant ${updated.slug} suspended: its people cannot sign in, their sessions ended and its API tokens are refused`
        : `tenant ${updated.slug} is active again: its people can sign in`,
    );
  };
  tenant
    .command("suspend")
    .description("suspend a tenant: its users cannot sign in, sessions end, API tokens are refused")
    .argument("<tenant>", "id or slug")
    .action(setStatus("suspended"));
  tenant.command("resume").description("make a suspended tenant active again").argument("<tenant>", "id or slug").action(setStatus("active"));
}
