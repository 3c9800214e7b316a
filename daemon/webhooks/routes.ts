import express from "express";
import { defineRoute } from "../kernel/define-route.js";
import { TooManyRequests } from "../kernel/errors.js";
import { z } from "zod";
import { receiveInboundWebhook, createSource, deleteSource, listInboundMessages, listSources, rotateSourceSecret, updateSource } from "./inbound.js";
import {
  allowedHostCreate,
  allowedHostList,
  allowedHostView,
  deliveryDetail,
  deliveryList,
  deliveryQuery,
  deliveryView,
  endpointCreate,
  endpointList,
  endpointRotateRequest,
  endpointUpdate,
  endpointView,
  endpointWithSecret,
  idParams,
  inboundAccepted,
  inboundMessageList,
  inboundParams,
  rotateRequest,
  sourceCreate,
  sourceList,
  sourceUpdate,
  sourceView,
  sourceWithSecret,
} from "./schema.js";
import {
  approveHost,
  createEndpoint,
  deleteEndpoint,
  getDelivery,
  listAllowedHosts,
  listDeliveries,
  listEndpoints,
  replayDelivery,
  revokeHost,
  rotateEndpointSecret,
  updateEndpoint,
} from "./service.js";

const tag = "webhooks";

/** Webhook administration (docs/webhooks.md): allow-list, endpoints, deliveries and dead letters, inbound sources. */
export const webhookRoutes = [
  defineRoute(
    { method: "get", path: "/webhooks/allowed-hosts", action: "webhook_host:list", tag, summary: "Destinations approved for outbound webhooks", response: allowedHostList },
    async ({ ctx, actor }) => ({ hosts: await listAllowedHosts(ctx, actor) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/webhooks/allowed-hosts",
      action: "webhook_host:approve",
      tag,
      summary: "Approve a host and port as a webhook destination (appliance operators)",
      body: allowedHostCreate,
      response: allowedHostView,
      status: 201,
      problems: { 409: "Already on the allow-list" },
    },
    async ({ ctx, actor, body, meta }) => approveHost(ctx, actor, body, meta),
  ),
  defineRoute(
    { method: "delete", path: "/webhooks/allowed-hosts/:id", action: "webhook_host:revoke", tag, summary: "Remove a destination from the allow-list", params: idParams },
    async ({ ctx, actor, params, meta }) => revokeHost(ctx, actor, params.id, meta),
  ),
  defineRoute(
    {
      method: "get",
      path: "/webhooks/deliveries",
      action: "webhook:list",
      tag,
      summary: "The delivery log, newest first (status=dead: the dead-letter list)",
      query: deliveryQuery,
      response: deliveryList,
    },
    async ({ ctx, actor, query }) => ({ deliveries: await listDeliveries(ctx, actor, query) }),
  ),
  defineRoute(
    {
      method: "get",
      path: "/webhooks/deliveries/:id",
      action: "webhook:list",
      tag,
      summary: "One delivery with its attempts and the body sent",
      params: idParams,
      response: deliveryDetail,
    },
    async ({ ctx, actor, params }) => getDelivery(ctx, actor, params.id),
  ),
  defineRoute(
    {
      method: "post",
      path: "/webhooks/deliveries/:id/replay",
      action: "webhook:replay",
      tag,
      summary: "Send a dead-lettered message again (same webhook-id, fresh attempts)",
      params: idParams,
      response: deliveryView,
      status: 201,
      problems: { 409: "Not in the dead-letter list, or the endpoint is disabled" },
    },
    async ({ ctx, actor, params, meta }) => replayDelivery(ctx, actor, params.id, meta),
  ),
  defineRoute(
    { method: "get", path: "/webhooks/sources", action: "webhook:list", tag, summary: "Inbound webhook sources of your tenant", response: sourceList },
    async ({ ctx, actor }) => ({ sources: await listSources(ctx, actor) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/webhooks/sources",
      action: "webhook:create",
      tag,
      summary: "Add an inbound source; answers with its secret, shown only this once",
      body: sourceCreate,
      response: sourceWithSecret,
      status: 201,
    },
    async ({ ctx, actor, body, meta }) => createSource(ctx, actor, body, meta),
  ),
  defineRoute(
    {
      method: "patch",
      path: "/webhooks/sources/:id",
      action: "webhook:update",
      tag,
      summary: "Rename, re-limit, enable or disable an inbound source",
      params: idParams,
      body: sourceUpdate,
      response: sourceView,
    },
    async ({ ctx, actor, params, body, meta }) => updateSource(ctx, actor, params.id, body, meta),
  ),
  defineRoute(
    { method: "delete", path: "/webhooks/sources/:id", action: "webhook:delete", tag, summary: "Remove an inbound source", params: idParams },
    async ({ ctx, actor, params, meta }) => deleteSource(ctx, actor, params.id, meta),
  ),
  defineRoute(
    {
      method: "post",
      path: "/webhooks/sources/:id/rotate-secret",
      action: "webhook:rotate_secret",
      tag,
      summary: "New secret for an inbound source; the previous one verifies during the overlap",
      params: idParams,
      body: rotateRequest,
      response: sourceWithSecret,
    },
    async ({ ctx, actor, params, body, meta }) => rotateSourceSecret(ctx, actor, params.id, body, meta),
  ),
  defineRoute(
    {
      method: "get",
      path: "/webhooks/sources/:id/messages",
      action: "webhook:list",
      tag,
      summary: "Messages received from a source (ids, types and sizes)",
      params: idParams,
      response: inboundMessageList,
    },
    async ({ ctx, actor, params }) => listInboundMessages(ctx, actor, params.id),
  ),
  defineRoute(
    { method: "get", path: "/webhooks", action: "webhook:list", tag, summary: "Your tenant's webhook endpoints (super-admins: the appliance's)", response: endpointList },
    async ({ ctx, actor }) => ({ endpoints: await listEndpoints(ctx, actor) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/webhooks",
      action: "webhook:create",
      tag,
      summary: "Subscribe an allow-listed URL to events; answers with its signing secret (v1), shown only this once, or its public key (v1a)",
      body: endpointCreate,
      response: endpointWithSecret,
      status: 201,
    },
    async ({ ctx, actor, body, meta }) => createEndpoint(ctx, actor, body, meta),
  ),
  defineRoute(
    {
      method: "patch",
      path: "/webhooks/:id",
      action: "webhook:update",
      tag,
      summary: "Change an endpoint's URL, events or description; enable or disable it",
      params: idParams,
      body: endpointUpdate,
      response: endpointView,
    },
    async ({ ctx, actor, params, body, meta }) => updateEndpoint(ctx, actor, params.id, body, meta),
  ),
  defineRoute(
    { method: "delete", path: "/webhooks/:id", action: "webhook:delete", tag, summary: "Remove an endpoint with its delivery log", params: idParams },
    async ({ ctx, actor, params, meta }) => deleteEndpoint(ctx, actor, params.id, meta),
  ),
  defineRoute(
    {
      method: "post",
      path: "/webhooks/:id/rotate-secret",
      action: "webhook:rotate_secret",
      tag,
      summary: "New signing secret or Ed25519 key pair (optionally switching scheme); both sign during the overlap",
      params: idParams,
      body: endpointRotateRequest,
      response: endpointWithSecret,
    },
    async ({ ctx, actor, params, body, meta }) => rotateEndpointSecret(ctx, actor, params.id, body, meta),
  ),
];

const inboundHeaders = z.object({
  "webhook-id": z.string().describe("The sender's message id (unique per message, the same on its retries)"),
  "webhook-timestamp": z.string().describe("Unix seconds when the message was signed"),
  "webhook-signature": z.string().describe("Space-separated `v1,<base64 HMAC-SHA-256 of id.timestamp.body>` signatures"),
});

/**
 * The inbound receiver: public (the signature authenticates the sender), and mounted ahead of the
 * JSON body parser because the signature covers the exact bytes, read here with their own limit.
 */
export const inboundWebhookRoutes = [
  defineRoute(
    {
      method: "post",
      path: "/webhooks/inbound/:sourceId",
      action: "public",
      tag,
      summary: "Receive a Standard Webhook from a configured source (signature, timestamp, replay and rate checked)",
      params: inboundParams,
      headers: inboundHeaders,
      body: { mediaType: "application/json", description: "The signed body, exactly as signed" },
      response: inboundAccepted,
      status: 202,
      problems: {
        401: "Unknown source, missing headers, timestamp outside the tolerance, or no matching signature",
        409: "This webhook-id was already received from this source",
        413: "The body exceeds webhooks.inboundBodyLimit",
        429: "The source's rate limit is exceeded (Retry-After says when to try again)",
        503: "Sealed: secrets cannot be read",
      },
      use: (ctx) => [express.raw({ type: () => true, limit: ctx.config.webhooks.inboundBodyLimit })],
    },
    async ({ ctx, req, res, params, meta }) => {
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      try {
        return await receiveInboundWebhook(ctx, params.sourceId, req.headers, body, meta);
      } catch (err) {
        if (err instanceof TooManyRequests) res.setHeader("Retry-After", String(err.extras.retryAfterSeconds ?? 60));
        throw err;
      }
    },
  ),
];
