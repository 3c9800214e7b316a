import { defineRoute } from "../kernel/define-route.js";
import { alertAckRequest, alertListQuery, alertListResponse, alertParams, alertSummary as alertSummarySchema, alertView } from "./schema.js";
import { acknowledgeAlert, alertSummary, getAlert, listAlerts } from "./store.js";

const tag = "alerts";

/** The alerts centre: open alerts and their history, the top bar's count, acknowledgement. */
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
    { method: "get", path: "/alerts/:id", action: "alert:list", tag, summary: "One alert with its acknowledgement and resolution", params: alertParams, response: alertView },
    ({ ctx, actor, params }) => getAlert(ctx, actor, params.id),
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
];
