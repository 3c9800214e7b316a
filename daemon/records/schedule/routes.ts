import type { Router } from "express";
import { currentActor } from "../../kernel/actor.js";
import { requestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { ifMatchVersion, itemParams, setEtag } from "../http.js";
import { doc, mountOn } from "../route-kit.js";
import { appointmentCreate, appointmentPage, appointmentUpdate, appointmentView, scheduleQuery } from "./schema.js";
import { createAppointment, getAppointment, listSchedule, updateAppointment } from "./service.js";

doc("get", "/schedule", {
  summary: "Appointments in a time window (front desk: the tenant's; practitioners: their own and their care team's); each shown is audited",
  query: scheduleQuery,
  ok: { status: 200, description: "Appointments, earliest first, and the next page's cursor", schema: appointmentPage },
});
doc("post", "/schedule/appointments", { summary: "Book an appointment (front desk)", body: appointmentCreate, ok: { status: 201, description: "The appointment", schema: appointmentView } });
doc("get", "/schedule/appointments/:itemId", { summary: "One appointment", params: itemParams, etag: "sends", ok: { status: 200, description: "The appointment", schema: appointmentView } });
doc("patch", "/schedule/appointments/:itemId", {
  summary: "Move, reassign or change the status of an appointment (If-Match required)",
  params: itemParams,
  body: appointmentUpdate,
  etag: "if-match",
  ok: { status: 200, description: "The appointment after the change", schema: appointmentView },
});

export function mountScheduleRoutes(ctx: ApplianceContext, router: Router): void {
  const route = mountOn(ctx, router);
  route({ method: "get", path: "/schedule", action: "schedule:read" }, async (req, res) => {
    res.json(await listSchedule(ctx, currentActor(res), scheduleQuery.parse(req.query), requestMeta(req, res)));
  });
  route({ method: "post", path: "/schedule/appointments", action: "schedule:write" }, async (req, res) => {
    const a = await createAppointment(ctx, currentActor(res), appointmentCreate.parse(req.body), requestMeta(req, res));
    setEtag(res, a.version);
    res.status(201).location(`/api/v1/schedule/appointments/${a.id}`).json(a);
  });
  route({ method: "get", path: "/schedule/appointments/:itemId", action: "schedule:read" }, async (req, res) => {
    const a = await getAppointment(ctx, currentActor(res), itemParams.parse(req.params).itemId, requestMeta(req, res));
    setEtag(res, a.version);
    res.json(a);
  });
  route({ method: "patch", path: "/schedule/appointments/:itemId", action: "schedule:write" }, async (req, res) => {
    const { itemId } = itemParams.parse(req.params);
    const body = appointmentUpdate.parse(req.body);
    const a = await updateAppointment(ctx, currentActor(res), itemId, ifMatchVersion(req), body, requestMeta(req, res));
    setEtag(res, a.version);
    res.json(a);
  });
}
