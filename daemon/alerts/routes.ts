import { defineRoute } from "../kernel/define-route.js";
import { createChannel, deleteChannel, listChannels, testChannel, updateChannel } from "./channels.js";
import {
  alertAckRequest,
  alertChannelInput,
  alertChannelList,
  alertChannelParams,
  alertChannelTestResult,
  alertChannelView,
  alertDetail,
  alertListQuery,
  alertListResponse,
  alertParams,
  alertSummary as alertSummarySchema,
  alertView,
} from "./schema.js";
import { acknowledgeAlert, alertSummary, getAlertDetail, listAlerts } from "./store.js";

const tag = "alerts";

/** The alerts centre (open alerts, history, the top bar's count, acknowledgement) and the channels alerts go to. */
export const alertRoutes = [
  defineRoute(
    {
      method: "get",
      path: "/alerts",
      action: "alert:list",
      tag,
      summary: "Alerts the caller may see (open by default), most severe and newest first",
      query: alertListQuery,
      response: alertListResponse,
    },
    ({ ctx, actor, query }) => listAlerts(ctx, actor, query),
  ),
  defineRoute(
    {
      method: "get",
      path: "/alerts/summary",
      action: "alert:list",
      tag,
      summary: "How many alerts are open, unacknowledged and critical (the console's badge)",
      response: alertSummarySchema,
    },
    ({ ctx, actor }) => alertSummary(ctx, actor),
  ),
  defineRoute(
    { method: "get", path: "/alerts/:id", action: "alert:list", tag, summary: "One alert, and every message about it to a channel", params: alertParams, response: alertDetail },
    ({ ctx, actor, params }) => getAlertDetail(ctx, actor, params.id),
  ),
  defineRoute(
    {
      method: "post",
      path: "/alerts/:id/acknowledge",
      action: "alert:acknowledge",
      tag,
      summary: "Acknowledge an open alert with a note (audited); it stays open until the problem clears",
      params: alertParams,
      body: alertAckRequest,
      response: alertView,
    },
    ({ ctx, actor, params, body, meta }) => acknowledgeAlert(ctx, actor, params.id, body.note, meta),
  ),
  defineRoute(
    { method: "get", path: "/alert-channels", action: "alert_channel:list", tag, summary: "The caller's scope's alert channels (never a password)", response: alertChannelList },
    async ({ ctx, actor }) => ({ channels: await listChannels(ctx, actor) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/alert-channels",
      action: "alert_channel:configure",
      tag,
      summary: "Add an e-mail (SMTP relay) or syslog (RFC 5424 over TLS) channel for the caller's scope's alerts",
      body: alertChannelInput,
      response: alertChannelView,
      status: 201,
      problems: { 409: "A channel of that name exists" },
    },
    ({ ctx, actor, body, meta }) => createChannel(ctx, actor, body, meta),
  ),
  defineRoute(
    {
      method: "put",
      path: "/alert-channels/:id",
      action: "alert_channel:configure",
      tag,
      summary: "Replace a channel's settings (an omitted password keeps the stored one)",
      params: alertChannelParams,
      body: alertChannelInput,
      response: alertChannelView,
      problems: { 409: "A channel of that name exists" },
    },
    ({ ctx, actor, params, body, meta }) => updateChannel(ctx, actor, params.id, body, meta),
  ),
  defineRoute(
    { method: "delete", path: "/alert-channels/:id", action: "alert_channel:configure", tag, summary: "Remove a channel and its message history", params: alertChannelParams },
    async ({ ctx, actor, params, meta }) => {
      await deleteChannel(ctx, actor, params.id, meta);
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/alert-channels/:id/test",
      action: "alert_channel:test",
      tag,
      summary: "Send a test message now; says whether the channel took it and why not",
      params: alertChannelParams,
      response: alertChannelTestResult,
    },
    ({ ctx, actor, params, meta }) => testChannel(ctx, actor, params.id, meta),
  ),
];
