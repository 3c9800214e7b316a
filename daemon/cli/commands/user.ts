import type { Command } from "commander";
import { listUsers, updateUser, type UserView } from "../../access/index.js";
import { createInvite, createInviteRequest } from "../../auth/index.js";
import { loadConfig } from "../../config/load.js";
import { HOST_OPERATOR } from "../../kernel/actor.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import { findUser, inviteLink, operatorFor, parseOptions, tenantByRef, unsealOptions, withHostOperator } from "../host-operator.js";
import type { UnsealOpts } from "../offline-context.js";
import { printResult, type GlobalOptions } from "../output.js";

const line = (u: UserView) =>
  `${(u.email ?? `service account: ${u.displayName ?? ""}`).padEnd(36)} ${u.role.padEnd(12)} ${u.status.padEnd(11)} mfa ${u.mfaEnabled ? "on " : "off"}  ${u.id}`;

export function registerUser(program: Command) {
  const user = program.command("user").description("staff accounts: invite, list, deactivate, reactivate");

  unsealOptions(
    user
      .command("invite")
      .description("invite someone by email with a role; the one-time link is printed (needs the key store unsealed: it signs the link)")
      .requiredOption("--email <email>", "their work email")
      .requiredOption("--role <role>", "owner, admin, practitioner, front_desk or auditor in a tenant; super_admin or support for appliance staff")
      .option("--tenant <tenant>", "the tenant's id or slug (tenant roles)"),
  ).action(async (opts: { email: string; role: string; tenant?: string } & UnsealOpts, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const config = loadConfig();
    const input = parseOptions(createInviteRequest, { email: opts.email, role: opts.role }, { email: "--email", role: "--role" });
    const created = await withHostOperator({ ...opts, unseal: true }, async (ctx) => {
      const tenantId = opts.tenant ? (await tenantByRef(ctx, opts.tenant)).id : undefined;
      return createInvite(ctx, HOST_OPERATOR, { ...input, ...(tenantId ? { tenantId } : {}) }, SYSTEM_META);
    });
    const link = inviteLink(config, created.token);
    printResult(global, { invite: created.invite, token: created.token, link }, [
      `invite for ${created.invite.email} as ${created.invite.role}, valid until ${created.invite.expiresAt}; send this link (shown once):`,
      `  ${link}`,
    ]);
  });

  user
    .command("list")
    .description("appliance staff, or one tenant's accounts")
    .option("--tenant <tenant>", "the tenant's id or slug")
    .action(async (opts: { tenant?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const users = await withHostOperator({ unseal: false }, async (ctx) => listUsers(ctx, await operatorFor(ctx, opts.tenant)));
      printResult(global, { users }, users.length ? users.map(line) : ["no accounts"]);
    });

  const setStatus = (status: "active" | "deactivated") => async (ref: string, opts: { tenant?: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const updated = await withHostOperator({ unseal: false }, async (ctx) => {
      const found = await findUser(ctx, ref, opts.tenant);
      return updateUser(ctx, found.actor, found.user.id, { status }, SYSTEM_META);
    });
    const who = updated.email ?? updated.displayName ?? updated.id;
    printResult(global, { user: updated }, status === "deactivated" ? `${who} is deactivated and signed out everywhere` : `${who} is active again`);
  };
  user
    .command("deactivate")
    .description("deactivate an account: it cannot sign in and its sessions end at once")
    .argument("<user>", "email or id")
    .option("--tenant <tenant>", "only look in this tenant (id or slug)")
    .action(setStatus("deactivated"));
  user
    .command("reactivate")
    .description("let a deactivated account sign in again")
    .argument("<user>", "email or id")
    .option("--tenant <tenant>", "only look in this tenant (id or slug)")
    .action(setStatus("active"));
}
