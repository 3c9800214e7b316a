import { defineRoute } from "../kernel/define-route.js";
import { completeSetup, superAdminExists } from "./setup.js";
import { createdSuperAdmin, setupRequest, setupStatus } from "./schema.js";

/** First-run setup: public until the first super-admin exists, then closed (409). */
export const setupRoutes = [
  defineRoute(
    { method: "get", path: "/setup", action: "public", tag: "setup", summary: "Whether first-run setup is still open (no super-admin yet)", response: setupStatus },
    async ({ ctx }) => ({ setupRequired: !(await superAdminExists(ctx)) }),
  ),
  defineRoute(
    {
      method: "post",
      path: "/setup",
      action: "public",
      tag: "setup",
      summary: "Create the first super-admin with the one-time setup token printed at first start",
      body: setupRequest,
      response: createdSuperAdmin,
      status: 201,
      problems: { 403: "Token invalid, used or expired", 409: "Setup already complete" },
    },
    ({ ctx, body }) => completeSetup(ctx, body),
  ),
];
