import type { Tx } from "../db/sql.js";
import type { Role } from "../kernel/actor.js";

/**
 * A tenant's own security policy, where it is stricter than (or tuned from) the appliance's
 * config: MFA per role, minimum password length, lockout thresholds, TOTP drift window. The
 * settings page writes it (access/tenants.ts); sign-in, invite acceptance, password change and
 * MFA read it here. Appliance staff (no tenant) follow config alone.
 */
export type TenantAuthPolicy = {
  /** Every role must use an authenticator. */
  mfaRequired: boolean;
  /** These roles must, in addition. */
  mfaRoles: string[];
  passwordMinLength: number | null;
  lockoutMaxFailures: number | null;
  lockoutMinutes: number | null;
  totpWindowSteps: number | null;
};

export const NO_TENANT_POLICY: TenantAuthPolicy = {
  mfaRequired: false,
  mfaRoles: [],
  passwordMinLength: null,
  lockoutMaxFailures: null,
  lockoutMinutes: null,
  totpWindowSteps: null,
};

/** The columns to select (with a `tn` alias for tenants) to build a policy with `policyFromRow`. */
export const POLICY_COLUMNS =
  "tn.mfa_required AS policy_mfa_required, tn.mfa_roles AS policy_mfa_roles, tn.password_min_length AS policy_password_min_length, tn.lockout_max_failures AS policy_lockout_max_failures, tn.lockout_minutes AS policy_lockout_minutes, tn.totp_window_steps AS policy_totp_window_steps";

export type PolicyRow = {
  policy_mfa_required: boolean | null;
  policy_mfa_roles: string[] | null;
  policy_password_min_length: number | null;
  policy_lockout_max_failures: number | null;
  policy_lockout_minutes: number | null;
  policy_totp_window_steps: number | null;
};

export function policyFromRow(r: PolicyRow): TenantAuthPolicy {
  return {
    mfaRequired: r.policy_mfa_required === true,
    mfaRoles: r.policy_mfa_roles ?? [],
    passwordMinLength: r.policy_password_min_length,
    lockoutMaxFailures: r.policy_lockout_max_failures,
    lockoutMinutes: r.policy_lockout_minutes,
    totpWindowSteps: r.policy_totp_window_steps,
  };
}

/** The policy of a tenant; appliance staff (null) get none beyond config. */
export async function tenantAuthPolicy(t: Tx, tenantId: string | null): Promise<TenantAuthPolicy> {
  if (!tenantId) return NO_TENANT_POLICY;
  const [row] = await t.rows<PolicyRow>(`SELECT ${POLICY_COLUMNS} FROM tenants tn WHERE tn.id = $1`, [tenantId]);
  return row ? policyFromRow(row) : NO_TENANT_POLICY;
}

/** Whether the tenant's policy makes this role use an authenticator. */
export function tenantRequiresMfa(policy: TenantAuthPolicy, role: Role): boolean {
  return policy.mfaRequired || policy.mfaRoles.includes(role);
}
