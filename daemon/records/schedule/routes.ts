import { defineRoute } from "../../kernel/define-route.js";
import { ifMatchVersion, itemParams, setEtag } from "../http.js";
import { IF_MATCH, location, PHI_READ, PHI_WRITE } from "../route-kit.js";
import { appointmentCreate, appointmentPage, appointmentUpdate, appointmentView, scheduleQuery } from "./schema.js";
import { createAppointment, getAppointment, listSchedule, updateAppointment } from "./service.js";

/** The schedule: time, patient and practitioner, no clinical content (front desk may see it). */
export const scheduleRoutes = [
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/schedule",
      action: "schedule:read",
      summary: "Appointments in a time window (front desk: the tenant's; practitioners: their own and their care team's); each shown is audited",
      query: scheduleQuery,
      response: appointmentPage,
      responseDescription: "Appointments, earliest first, and the next page's cursor",
    },
    ({ ctx, actor, query, meta }) => listSchedule(ctx, actor, query, meta),
  ),
  defineRoute(
    {
      ...PHI_WRITE,
      method: "post",
      path: "/schedule/appointments",
      action: "schedule:write",
      summary: "Book an appointment (front desk)",
      body: appointmentCreate,
      response: appointmentView,
      status: 201,
    },
    async ({ ctx, actor, body, res, meta }) => {
      const a = await createAppointment(ctx, actor, body, meta);
      setEtag(res, a.version);
      res.location(location(`/schedule/appointments/${a.id}`));
      return a;
    },
  ),
  defineRoute(
    {
      ...PHI_READ,
      method: "get",
      path: "/schedule/appointments/:itemId",
      action: "schedule:read",
      summary: "One appointment, with its ETag",
      params: itemParams,
      response: appointmentView,
    },
    async ({ ctx, actor, params, res, meta }) => {
      const a = await getAppointment(ctx, actor, params.itemId, meta);
      setEtag(res, a.version);
      return a;
    },
  ),
  defineRoute(
    {
      ...IF_MATCH,
      method: "patch",
      path: "/schedule/appointments/:itemId",
      action: "schedule:write",
      summary: "Move, reassign or change the status of an appointment (If-Match required)",
      params: itemParams,
      body: appointmentUpdate,
      response: appointmentView,
      responseDescription: "The appointment after the change",
    },
    async ({ ctx, actor, params, body, req, res, meta }) => {
      const a = await updateAppointment(ctx, actor, params.itemId, ifMatchVersion(req), body, meta);
      setEtag(res, a.version);
      return a;
    },
  ),
];
