import type { Command } from "commander";
import { decidePrivilegedAccess, endPrivilegedAccess, listPrivilegedAccess, type PrivilegedAccessRes } from "../../access/index.js";
import { hostOperatorIn } from "../../kernel/actor.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import { tenantByRef, withHostOperator } from "../host-operator.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

/**
 * `wardkeep access …`: just-in-time privileged access (docs/sso.md). A person asks for a role
 * for themselves in the console (or with their own session through the API): a request is
 * theirs, so the host's command line files none. Here the host operator lists the tenant's
 * requests and grants and decides or ends them, as a second admin would; the audit trail names
 * the decider `host_operator`.
 */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function stateOf(g: PrivilegedAccessRes): string {
  if (g.active) return `active until ${g.expiresAt}`;
  if (g.status === "approved") return `expired at ${g.expiresAt}`;
  if (g.status === "ended") return `ended (${g.endReason ?? "ended"}) at ${g.endedAt}`;
  return g.status;
}

const grantLine = (g: PrivilegedAccessRes) => `${g.id}  ${(g.userEmail ?? g.userId).padEnd(32)} ${g.baseRole} -> ${g.role} for ${g.minutes} min  ${stateOf(g)}  "${g.reason}"`;

export function registerAccess(program: Command) {
  const access = program.command("access").description("just-in-time privileged access: requests and grants of admin or auditor for a bounded time (docs/sso.md)");

  access
    .command("grants")
    .description("the tenant's requests and grants, newest first: who, role, minutes, state (pending, active until …, denied, ended), reason")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .option("--pending", "only requests waiting for a decision")
    .action(async (opts: { tenant: string; pending?: boolean }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const all = await withHostOperator({ unseal: false }, async (ctx) => listPrivilegedAccess(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id)));
      const grants = opts.pending ? all.filter((g) => g.status === "pending") : all;
      printResult(
        global,
        { grants },
        grants.length ? grants.map(grantLine) : [opts.pending ? "no requests waiting for a decision" : "no privileged access requests in this tenant"],
      );
    });

  const decide = (verb: "approve" | "deny" | "end", description: string) =>
    access
      .command(verb)
      .description(description)
      .argument("<id>", "the request's id (wardkeep access grants)")
      .requiredOption("--tenant <tenant>", "the tenant's id or slug")
      .action(async (id: string, opts: { tenant: string }, cmd: Command) => {
        const global = cmd.optsWithGlobals<GlobalOptions>();
        if (!UUID.test(id)) throw new CliError("<id>: not a request id (wardkeep access grants shows them)");
        const grant = await withHostOperator({ unseal: false }, async (ctx) => {
          const actor = hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id);
          return verb === "end" ? endPrivilegedAccess(ctx, actor, id, SYSTEM_META) : decidePrivilegedAccess(ctx, actor, id, verb, SYSTEM_META);
        });
        const who = grant.userEmail ?? grant.userId;
        printResult(
          global,
          { grant },
          verb === "approve"
            ? `${who} holds ${grant.role} until ${grant.expiresAt} (from their next request; it ends by itself)`
            : verb === "deny"
              ? `${who}'s request for ${grant.role} denied`
              : `${who}'s ${grant.role} access ended`,
        );
      });

  decide("approve", "grant a pending request: the role holds from the person's next request until the minutes asked for have passed");
  decide("deny", "turn a pending request down");
  decide("end", "end a grant early, or withdraw a pending request");
}
