import { randomUUID } from "node:crypto";
import request from "supertest";
import type { GuardedRoute } from "../../daemon/access/guard.js";
import type { SignedIn } from "./actors.js";
import type { TestAppliance } from "./appliance.js";

/**
 * Calls a guarded route as a signed-in actor (or anonymously) with random ids and an empty body:
 * the permission-matrix tests only look at whether the policy let the request through.
 */
export function callGuardedRoute(app: TestAppliance, who: SignedIn | null, route: GuardedRoute) {
  const path = route.path.replace(/:\w+/g, () => randomUUID());
  const req = who ? who.agent[route.method](path) : request(app.baseUrl)[route.method](path).ca(app.caPem);
  return route.method === "get" || route.method === "delete" ? req : req.send({});
}
