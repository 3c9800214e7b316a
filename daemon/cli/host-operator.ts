import type { Command } from "commander";
import type { z } from "zod";
import { listTenants, listUsers, type TenantView, type UserView } from "../access/index.js";
import { loadConfig } from "../config/load.js";
import { publicOrigin } from "../config/public-url.js";
import type { Config } from "../config/schema.js";
import type { ApplianceContext } from "../context.js";
import { pendingMigrations } from "../db/migrate.js";
import { HOST_OPERATOR, hostOperatorIn, type Actor } from "../kernel/actor.js";
import { AppError } from "../kernel/errors.js";
import { withOfflineContext, withUnsealedContext, type UnsealOpts } from "./offline-context.js";
import { CliError } from "./output.js";

/**
 * What the account-administration commands (`tenant`, `user`, `token`) share: they call the same
 * services as the HTTP routes, as the host operator (kernel/actor.ts `HOST_OPERATOR`), on an
 * offline context. Work that signs something with a key derived from the root key (invite links,
 * API tokens) needs the key store unsealed for the command; the rest does not.
 */
export async function withHostOperator<T>(opts: UnsealOpts & { unseal: boolean }, work: (ctx: ApplianceContext) => Promise<T>): Promise<T> {
  if (opts.unseal) return withUnsealedContext(opts, work);
  try {
    return await withOfflineContext(loadConfig(), async (ctx) => {
      if ((await pendingMigrations(ctx.db.app)).length) throw new CliError("the database schema is not current; run `wardkeep migrate` first");
      return work(ctx);
    });
  } catch (err) {
    if (err instanceof AppError) throw new CliError(err.message);
    throw err;
  }
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** The options of a command that unseals the key store for its own duration. */
export function unsealOptions(c: Command): Command {
  return c
    .option("--passphrase-file <file>", "file holding the unseal passphrase (passphrase mode)")
    .option("--share-file <file>", "a custodian share (shamir mode); repeat", collect);
}

/** The address people open an invite link at: the appliance's public address (server.publicUrl). */
export function inviteLink(config: Config, token: string): string {
  return `${publicOrigin(config)}/#/invite/${token}`;
}

/**
 * Validates a command's options with the route's own request schema, so the CLI accepts exactly
 * what the API accepts; the first problem becomes one line naming the option (`--slug: ...`).
 */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, flags: Record<string, string>): z.infer<S> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const key = String(issue.path[0] ?? "");
  throw new CliError(`${flags[key] ?? (key ? `--${key}` : "input")}: ${issue.message}`);
}

/** The tenant an option names, by id or slug, as the host operator sees every tenant. */
export async function tenantByRef(ctx: ApplianceContext, ref: string): Promise<TenantView> {
  const tenants = await listTenants(ctx, HOST_OPERATOR);
  const found = tenants.find((t) => t.id === ref || t.slug === ref);
  if (!found) throw new CliError(`no tenant with the id or slug ${ref} (wardkeep tenant list shows them)`);
  return found;
}

/** The actor that manages accounts where `tenant` names (appliance staff when absent). */
export async function operatorFor(ctx: ApplianceContext, tenant: string | undefined): Promise<Actor> {
  return tenant ? hostOperatorIn((await tenantByRef(ctx, tenant)).id) : HOST_OPERATOR;
}

/**
 * An account by email or id: among appliance staff and every tenant's accounts, or only the
 * named tenant's. Returns it with the actor that may manage it (same tenant).
 */
export async function findUser(ctx: ApplianceContext, ref: string, tenant: string | undefined): Promise<{ user: UserView; actor: Actor }> {
  const actors = tenant ? [await operatorFor(ctx, tenant)] : [HOST_OPERATOR, ...(await listTenants(ctx, HOST_OPERATOR)).map((t) => hostOperatorIn(t.id))];
  const wanted = ref.toLowerCase();
  for (const actor of actors) {
    const user = (await listUsers(ctx, actor)).find((u) => u.id === wanted || u.email === wanted);
    if (user) return { user, actor };
  }
  throw new CliError(`no account with the email or id ${ref}${tenant ? ` in tenant ${tenant}` : ""} (wardkeep user list [--tenant T] shows them)`);
}
