/**
 * Patients for tests of other capabilities (care teams, break-glass, isolation), made the way a
 * clinic makes them: a front-desk account of the tenant registers them over HTTPS through the
 * records API (`POST /api/v1/patients`). One front-desk account per tenant and appliance.
 *
 *   const patientId = await createPatient(app, tenantId);                  // "Test Patient"
 *   const p = await createPatient(app, tenantId, { mrn: "MRN-7", email }); // returns the id
 */
import type { TestAppliance } from "./appliance.js";
import { signIn, type SignedIn } from "./actors.js";

const desks = new WeakMap<TestAppliance, Map<string, Promise<SignedIn>>>();

function frontDeskOf(app: TestAppliance, tenantId: string, fresh = false): Promise<SignedIn> {
  let byTenant = desks.get(app);
  if (!byTenant) desks.set(app, (byTenant = new Map()));
  let desk = byTenant.get(tenantId);
  if (!desk || fresh) byTenant.set(tenantId, (desk = signIn(app, { role: "front_desk", tenantId, mfa: false })));
  return desk;
}

export async function createPatient(app: TestAppliance, tenantId: string, fields: Record<string, unknown> = {}): Promise<string> {
  const register = async (fresh: boolean) => (await frontDeskOf(app, tenantId, fresh)).agent.post("/api/v1/patients").send({ name: "Test Patient", ...fields });
  let res = await register(false);
  // A test clock moved past the idle timeout ends the cached session: sign a new one in.
  if (res.status === 401) res = await register(true);
  if (res.status !== 201) throw new Error(`patient registration failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.id as string;
}
