import type { Command } from "commander";
import { HOST_OPERATOR } from "../../kernel/actor.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import {
  allowedHostCreate,
  approveHost,
  deliveryQuery,
  idParams,
  listAllowedHosts,
  listDeliveries,
  listEndpoints,
  replayDelivery,
  revokeHost,
  type AllowedHostView,
  type DeliveryView,
  type EndpointView,
} from "../../webhooks/index.js";
import { parseOptions, withHostOperator } from "../host-operator.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

const hostLine = (h: AllowedHostView) => `${h.id}  ${`${h.host}:${h.port}`.padEnd(40)} ${h.allowPrivate ? "private allowed" : "public only   "}  ${h.note ?? ""}`;
const endpointLine = (e: EndpointView) =>
  `${e.id}  ${e.status.padEnd(8)} ${(e.tenantId ?? "appliance").padEnd(36)}  ${e.signatureScheme.padEnd(3)}  pending ${String(e.pending).padStart(4)}  dead ${String(e.dead).padStart(4)}  ${e.url}  [${e.eventTypes.join(",")}]`;
const deliveryLine = (d: DeliveryView) =>
  `${d.id}  ${d.status.padEnd(9)} ${d.eventType.padEnd(20)} attempts ${d.attempts}  ${d.deadReason ?? d.lastError ?? ""}  ${d.messageId}`.trimEnd();

/** `wardkeep webhook`: the allow-list, endpoints, deliveries and dead-letter replay, as the host operator (docs/webhooks.md). */
export function registerWebhook(program: Command) {
  const webhook = program.command("webhook").description("outbound webhooks: destination allow-list, endpoints, delivery log, dead-letter replay");

  webhook
    .command("hosts")
    .description("the destinations approved for outbound webhooks")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const hosts = await withHostOperator({ unseal: false }, (ctx) => listAllowedHosts(ctx, HOST_OPERATOR));
      printResult(global, { hosts }, hosts.length ? hosts.map(hostLine) : ["no approved destinations: wardkeep webhook allow HOST PORT"]);
    });

  webhook
    .command("allow")
    .description("approve HOST:PORT as a webhook destination")
    .argument("<host>", "host name or IP address, as in endpoint URLs")
    .argument("<port>", "the one port endpoints on this host may use")
    .option("--private", "the host may resolve to private, shared or loopback addresses (a receiver inside the hospital network)")
    .option("--note <text>", "why it was approved (ticket, receiver)")
    .action(async (host: string, port: string, opts: { private?: boolean; note?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const input = parseOptions(
        allowedHostCreate,
        { host, port: /^\d+$/.test(port) ? Number(port) : port, allowPrivate: opts.private === true, note: opts.note },
        { host: "<host>", port: "<port>", note: "--note" },
      );
      const entry = await withHostOperator({ unseal: false }, (ctx) => approveHost(ctx, HOST_OPERATOR, input, SYSTEM_META));
      printResult(global, { host: entry }, `${entry.host}:${entry.port} approved (${entry.allowPrivate ? "private addresses allowed" : "public addresses only"}); id ${entry.id}`);
    });

  webhook
    .command("disallow")
    .description("remove an allow-list entry: deliveries to it are refused from then on")
    .argument("<id>", "the entry's id (wardkeep webhook hosts)")
    .action(async (id: string, _opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      parseOptions(idParams, { id }, { id: "<id>" });
      await withHostOperator({ unseal: false }, (ctx) => revokeHost(ctx, HOST_OPERATOR, id, SYSTEM_META));
      printResult(global, { removed: id }, `allow-list entry ${id} removed`);
    });

  webhook
    .command("endpoints")
    .description("every tenant's endpoints and the appliance's, with pending and dead-lettered counts")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const endpoints = await withHostOperator({ unseal: false }, (ctx) => listEndpoints(ctx, HOST_OPERATOR));
      printResult(global, { endpoints }, endpoints.length ? endpoints.map(endpointLine) : ["no webhook endpoints"]);
    });

  webhook
    .command("public-key")
    .description("the Ed25519 public key (whpk_) a v1a endpoint's receiver verifies with, and the previous one during a rotation's overlap")
    .argument("<endpoint-id>", "the endpoint's id (wardkeep webhook endpoints)")
    .action(async (id: string, _opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      parseOptions(idParams, { id }, { id: "<endpoint-id>" });
      const endpoints = await withHostOperator({ unseal: false }, (ctx) => listEndpoints(ctx, HOST_OPERATOR));
      const e = endpoints.find((x) => x.id === id);
      if (!e) throw new CliError(`no webhook endpoint ${id}`);
      const keys = {
        endpointId: e.id,
        signatureScheme: e.signatureScheme,
        publicKey: e.publicKey,
        previousPublicKey: e.previousPublicKey,
        previousUntil: e.previousSecretExpiresAt,
      };
      const lines = e.publicKey
        ? [e.publicKey, ...(e.previousPublicKey ? [`${e.previousPublicKey}  (previous key, also signs until ${e.previousSecretExpiresAt})`] : [])]
        : undefined;
      if (!lines) throw new CliError(`endpoint ${e.id} signs with v1 (a shared whsec_ secret, shown once when it was made); it has no public key`);
      printResult(global, keys, lines);
    });

  webhook
    .command("deliveries")
    .description("the delivery log, newest first; --status dead lists the dead letters")
    .option("--status <status>", "pending, delivered, dead or replayed")
    .option("--endpoint <id>", "one endpoint's deliveries")
    .option("--limit <n>", "at most this many", "100")
    .action(async (opts: { status?: string; endpoint?: string; limit: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const query = parseOptions(
        deliveryQuery,
        { status: opts.status, endpointId: opts.endpoint, limit: opts.limit },
        { status: "--status", endpointId: "--endpoint", limit: "--limit" },
      );
      const deliveries = await withHostOperator({ unseal: false }, (ctx) => listDeliveries(ctx, HOST_OPERATOR, query));
      printResult(global, { deliveries }, deliveries.length ? deliveries.map(deliveryLine) : ["no deliveries"]);
    });

  webhook
    .command("replay")
    .description("send a dead-lettered delivery again (same webhook-id, fresh attempts; the running daemon sends it)")
    .argument("<delivery-id>", "a dead delivery's id (wardkeep webhook deliveries --status dead)")
    .action(async (id: string, _opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      parseOptions(idParams, { id }, { id: "<delivery-id>" });
      const delivery = await withHostOperator({ unseal: false }, (ctx) => replayDelivery(ctx, HOST_OPERATOR, id, SYSTEM_META));
      printResult(global, { delivery }, `replay queued as delivery ${delivery.id} (message ${delivery.messageId})`);
    });
}
