/**
 * The typed API client: the only module that calls fetch, with one function per resource.
 * Response types are the daemon's own zod response schemas (`z.infer`, imported as types only,
 * so no daemon code reaches the bundle): a page that reads a field the API does not send fails
 * `npm run typecheck:ui`. It sends JSON, carries the CSRF token for cookie-session writes, and
 * turns RFC 9457 problem+json answers into ApiError with a message for people. Every answer is
 * also shown to the listeners registered with `onApiResponse` (the session store watches for
 * "your session ended" and for the support-access header there).
 */
import type {
  CampaignEvidenceRes,
  CampaignRes,
  CampaignSummaryRes,
  CapabilitiesRes,
  CreatedTenantRes,
  PrivilegedAccessReq,
  PrivilegedAccessRes,
  ReviewDecisionReq,
  SecuritySettingsReq,
  SecuritySettingsRes,
  SupportRequestRes,
  TenantRes,
  UserRes,
} from "../../../daemon/access/schema.js";
import type { AuditNamesReq, AuditNamesRes, AuditSearchRes, ExportJobRes, ExportListRes, PublicKeyRes, TimelineRes, VerifyReportRes } from "../../../daemon/audit/schema.js";
import type {
  ApiTokenRes,
  CreateApiTokenReq,
  CreatedApiTokenRes,
  InviteAcceptRes,
  InviteCreatedRes,
  InviteRes,
  LoginRes,
  MfaActivateRes,
  MfaEnrollRes,
  MfaVerifyRes,
  RecoveryCodesRes,
  RevokeAllReq,
  RevokeAllRes,
  SessionInfoRes,
  SessionRes,
  SetupCreatedRes,
  SetupStatusRes,
} from "../../../daemon/auth/schema.js";
import type { AlertChannelTestRes, AlertChannelViewRes, AlertDetailRes, AlertListRes, AlertSummaryRes, AlertViewRes } from "../../../daemon/alerts/schema.js";
import type {
  BackupListRes,
  BackupPolicyRes,
  DrillRecordRes,
  PitrDrillRes,
  PitrStatusRes,
  RestoreOutcomeRes,
  RestoreReq,
  RunStartedRes,
  SnapshotRecordRes,
  TargetTestRes,
  VerifyResultRes,
} from "../../../daemon/backups/schema.js";
import type { DeletionRequestListRes, DeletionRequestRes, LegalHoldListRes, LegalHoldRes } from "../../../daemon/records/data-rights/schema.js";
import type { NotReadyProblem, ReadinessChecks, ReadinessRes } from "../../../daemon/http/schema.js";
import type { JobListRes, JobRunStartedRes, JobRunsRes } from "../../../daemon/jobs/schema.js";
import type { KeyStatusRes, RotationStartedRes, SealProgressRes } from "../../../daemon/keys/schema.js";
import type {
  DispositionCertificateRes,
  RecordClass,
  RetentionHoldRes,
  RetentionHoldsRes,
  RetentionPreviewRes,
  RetentionRuleChangeReq,
  RetentionRulesRes,
  RetentionRunsRes,
  RuleChangeResultRes,
  Trigger,
} from "../../../daemon/retention/schema.js";
import type {
  DeliveryDetailRes,
  DeliveryListRes,
  DeliveryQuery,
  DeliveryView,
  EndpointListRes,
  EndpointRotateReq,
  EndpointWithSecretRes,
} from "../../../daemon/webhooks/schema.js";
import type {
  CreateProviderReq,
  DryRunRes,
  MfaPolicyReq,
  MfaPolicyRes,
  ProviderListRes,
  ProviderView,
  PublicProviderListRes,
  RuleInput,
  RuleListRes,
  RuleView,
  SavedRulesRes,
  SsoLoginRes,
  SsoLogoutRes,
  StepUpReq,
  StepUpStartedRes,
  TestResultRes,
  TestSignInReq,
  TestStartedRes,
  UpdateProviderReq,
} from "../../../daemon/sso/schema.js";
import type { CreatedScimTokenRes, CreateScimTokenReq, ScimTokenListRes, ScimTokenRes } from "../../../daemon/scim/schema.js";

export type Problem = {
  type: string;
  title: string;
  status: number;
  detail?: string;
  requestId?: string;
  errors?: { path: string; message: string }[];
  /** Why a 401 happened: idle_timeout, session_expired, session_revoked, mfa_required, invalid_code… */
  reason?: string;
  /** Present on step-up problems the person can satisfy with a fresh code. */
  stepUp?: { maxAgeSeconds: number };
  [extra: string]: unknown;
};

export const STEP_UP_REQUIRED = "urn:wardkeep:problem:step-up-required";

export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    super(messageFor(problem));
  }
  get status() {
    return this.problem.status;
  }
  get type() {
    return this.problem.type;
  }
  get reason(): string | undefined {
    return this.problem.reason;
  }
  /** A sensitive action that a fresh TOTP or recovery code would allow. */
  get stepUpPossible(): boolean {
    return this.problem.type === STEP_UP_REQUIRED && this.problem.stepUp !== undefined;
  }
}

function sentence(text: string): string {
  return text ? text[0]!.toUpperCase() + text.slice(1) : text;
}

function messageFor(p: Problem): string {
  const fields = p.errors?.map((e) => `${e.path}: ${e.message}`).join("; ");
  const main = sentence(p.detail ?? p.title);
  const text = [main, fields].filter(Boolean).join(" — ");
  // A request id lets IT find the server's log line for a failure nobody can explain from here.
  return p.status >= 500 && p.requestId ? `${text} (request ${p.requestId})` : text;
}

/** The message to show for anything a call may throw. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

let csrfToken: string | undefined;
export function setCsrfToken(token: string | undefined) {
  csrfToken = token;
}

/** The header the daemon puts on every response given under support access. */
export const SUPPORT_ACCESS_HEADER = "Wardkeep-Support-Access";

export type ApiResponseInfo = { method: string; path: string; status: number; supportAccess: string | null; problem?: Problem };
type Listener = (info: ApiResponseInfo) => void;
const listeners = new Set<Listener>();

/** Observe every answer (status, support-access header, problem). Returns the unsubscribe. */
export function onApiResponse(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function parse(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** One HTTP exchange: JSON in and out, problem+json turned into ApiError. */
async function request<T>(method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE", path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrfToken && method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  } catch {
    throw new ApiError({ type: "about:blank", title: "The appliance cannot be reached; check the network and try again", status: 0 });
  }
  const data = parse(await res.text()) as (Problem & Record<string, unknown>) | undefined;
  const problem = !res.ok ? (data?.type ? (data as Problem) : { type: "about:blank", title: res.statusText || `HTTP ${res.status}`, status: res.status }) : undefined;
  const info: ApiResponseInfo = { method, path, status: res.status, supportAccess: res.headers.get(SUPPORT_ACCESS_HEADER), ...(problem ? { problem } : {}) };
  for (const listener of listeners) listener(info);
  if (problem) throw new ApiError(problem);
  return data as T;
}

/** A file the API sends as a download (an export): its bytes and the name the daemon gave it. */
export type Download = { blob: Blob; filename: string };

/** GET of a download: the body as a Blob; a problem+json answer becomes ApiError like any other. */
async function download(path: string): Promise<Download> {
  let res: Response;
  try {
    res = await fetch(path, { headers: { Accept: "application/json, text/csv" }, credentials: "same-origin" });
  } catch {
    throw new ApiError({ type: "about:blank", title: "The appliance cannot be reached; check the network and try again", status: 0 });
  }
  if (!res.ok) {
    const data = parse(await res.text()) as Problem | undefined;
    const problem = data?.type ? data : { type: "about:blank", title: res.statusText || `HTTP ${res.status}`, status: res.status };
    for (const listener of listeners) listener({ method: "GET", path, status: res.status, supportAccess: res.headers.get(SUPPORT_ACCESS_HEADER), problem });
    throw new ApiError(problem);
  }
  const filename = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") ?? "")?.[1] ?? "export";
  return { blob: await res.blob(), filename };
}

/** What the status page shows: /readyz answers 200 `{status: "ready"}` or a 503 problem with the same checks. */
export type Readiness = { ready: boolean; checks: ReadinessChecks };

async function readiness(): Promise<Readiness> {
  let res: Response;
  try {
    res = await fetch("/readyz", { headers: { Accept: "application/json" }, credentials: "same-origin" });
  } catch {
    throw new ApiError({ type: "about:blank", title: "The appliance cannot be reached", status: 0 });
  }
  const data = parse(await res.text());
  if (res.status === 200) {
    const ready = data as ReadinessRes;
    return { ready: ready.status === "ready", checks: ready.checks };
  }
  const notReady = data as NotReadyProblem | undefined;
  if (res.status === 503 && notReady?.checks) return { ready: false, checks: notReady.checks };
  throw new ApiError({ type: "about:blank", title: `The readiness check answered ${res.status}`, status: res.status });
}

const V1 = "/api/v1";
const seg = encodeURIComponent;

/** Query string from the members that are set. */
function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") q.set(k, String(v));
  const text = q.toString();
  return text ? `?${text}` : "";
}

export type AuditSearch = { from?: string; to?: string; actor?: string; patient?: string; action?: string; outcome?: string; cursor?: string; limit?: number };
export type KeyRotation = { target: "kek" } | { target: "tenant"; tenantId: string } | { target: "audit-signing" };

/** One function per resource and operation; request bodies follow the daemon's request schemas. */
export const api = {
  health: { readiness },
  setup: {
    status: () => request<SetupStatusRes>("GET", `${V1}/setup`),
    complete: (body: { token: string; email: string; password: string }) => request<SetupCreatedRes>("POST", `${V1}/setup`, body),
  },
  auth: {
    session: () => request<SessionInfoRes>("GET", `${V1}/auth/session`),
    login: (body: { email: string; password: string }) => request<LoginRes>("POST", `${V1}/auth/login`, body),
    verify: (body: { code: string } | { recoveryCode: string }) => request<MfaVerifyRes>("POST", `${V1}/auth/mfa`, body),
    logout: () => request<void>("POST", `${V1}/auth/logout`),
    enrollMfa: () => request<MfaEnrollRes>("POST", `${V1}/auth/mfa/enroll`),
    activateMfa: (code: string) => request<MfaActivateRes>("POST", `${V1}/auth/mfa/activate`, { code }),
    newRecoveryCodes: () => request<RecoveryCodesRes>("POST", `${V1}/auth/mfa/recovery-codes`),
  },
  access: {
    capabilities: () => request<CapabilitiesRes>("GET", `${V1}/access/capabilities`),
  },
  tenants: {
    list: () => request<TenantRes[]>("GET", `${V1}/tenants`),
    create: (body: { name: string; slug?: string; ownerEmail?: string }) => request<CreatedTenantRes>("POST", `${V1}/tenants`, body),
    update: (id: string, body: { name?: string; status?: "active" | "suspended" }) => request<TenantRes>("PATCH", `${V1}/tenants/${seg(id)}`, body),
  },
  securitySettings: {
    get: () => request<SecuritySettingsRes>("GET", `${V1}/settings/security`),
    update: (body: SecuritySettingsReq) => request<SecuritySettingsRes>("PUT", `${V1}/settings/security`, body),
  },
  users: {
    list: () => request<UserRes[]>("GET", `${V1}/users`),
    update: (id: string, body: { role?: string; status?: "active" | "deactivated"; displayName?: string; breakGlassAccount?: boolean }) =>
      request<UserRes>("PATCH", `${V1}/users/${seg(id)}`, body),
    resetMfa: (id: string) => request<UserRes>("POST", `${V1}/users/${seg(id)}/mfa/reset`),
  },
  invites: {
    list: () => request<InviteRes[]>("GET", `${V1}/invites`),
    create: (body: { email: string; role: string; tenantId?: string }) => request<InviteCreatedRes>("POST", `${V1}/invites`, body),
    revoke: (id: string) => request<InviteRes>("DELETE", `${V1}/invites/${seg(id)}`),
    accept: (body: { token: string; password: string; displayName?: string }) => request<InviteAcceptRes>("POST", `${V1}/invites/accept`, body),
  },
  sessions: {
    /** Own sessions, or another account's (admins). */
    list: (userId?: string) => request<SessionRes[]>("GET", `${V1}/sessions${query({ userId })}`),
    /** Every live session of the tenant (or of appliance staff, for super-admins). */
    listAll: () => request<SessionRes[]>("GET", `${V1}/sessions${query({ all: "true" })}`),
    revoke: (id: string) => request<void>("DELETE", `${V1}/sessions/${seg(id)}`),
    /** Sign out one account (own or, for admins, another's) or everyone but the caller, with a reason that goes into the audit trail. */
    revokeAll: (body: RevokeAllReq) => request<RevokeAllRes>("POST", `${V1}/sessions/revoke-all`, body),
  },
  apiTokens: {
    list: () => request<ApiTokenRes[]>("GET", `${V1}/api-tokens`),
    create: (body: CreateApiTokenReq) => request<CreatedApiTokenRes>("POST", `${V1}/api-tokens`, body),
    revoke: (id: string) => request<ApiTokenRes>("DELETE", `${V1}/api-tokens/${seg(id)}`),
  },
  accessReviews: {
    list: () => request<CampaignSummaryRes[]>("GET", `${V1}/access-reviews/campaigns`),
    start: (body: { deadlineDays?: number }) => request<CampaignRes>("POST", `${V1}/access-reviews/campaigns`, body),
    get: (id: string) => request<CampaignRes>("GET", `${V1}/access-reviews/campaigns/${seg(id)}`),
    /** Removing deactivates the account: a step-up action (wrap in stepUp.run). */
    decide: (id: string, userId: string, body: ReviewDecisionReq) => request<CampaignRes>("PUT", `${V1}/access-reviews/campaigns/${seg(id)}/entries/${seg(userId)}`, body),
    evidence: (id: string) => request<CampaignEvidenceRes>("GET", `${V1}/access-reviews/campaigns/${seg(id)}/evidence`),
  },
  support: {
    list: () => request<SupportRequestRes[]>("GET", `${V1}/support/requests`),
    create: (body: { tenantId: string; ticketRef: string; reason: string }) => request<SupportRequestRes>("POST", `${V1}/support/requests`, body),
    act: (id: string, action: "approve" | "deny" | "enter" | "end") => request<SupportRequestRes>("POST", `${V1}/support/requests/${seg(id)}/${action}`),
  },
  keys: {
    status: () => request<KeyStatusRes>("GET", `${V1}/keys`),
    sealStatus: () => request<SealProgressRes>("GET", `${V1}/keys/seal-status`),
    /** One passphrase, or one custodian's share per call; `{}` retries a key file or HSM; `{reset: true}` discards entered shares. */
    unseal: (body: { passphrase: string } | { share: string } | { reset: true } | Record<string, never>) => request<SealProgressRes>("POST", `${V1}/keys/unseal`, body),
    seal: (body: { reason?: string }) => request<SealProgressRes>("POST", `${V1}/keys/seal`, body),
    rotate: (body: KeyRotation) => request<RotationStartedRes>("POST", `${V1}/keys/rotate`, body),
  },
  audit: {
    search: (q: AuditSearch) => request<AuditSearchRes>("GET", `${V1}/audit${query(q)}`),
    timeline: (patientId: string, q: { cursor?: string } = {}) => request<TimelineRes>("GET", `${V1}/audit/patients/${seg(patientId)}/timeline${query(q)}`),
    /** Names for the ids of one page of events (patients only for roles that may read them; each an audited read). */
    names: (body: AuditNamesReq) => request<AuditNamesRes>("POST", `${V1}/audit/names`, body),
    verify: () => request<VerifyReportRes>("GET", `${V1}/audit/verify`),
    publicKey: () => request<PublicKeyRes>("GET", `${V1}/audit/public-key`),
    exports: {
      list: () => request<ExportListRes>("GET", `${V1}/audit/exports`),
      get: (id: string) => request<ExportJobRes>("GET", `${V1}/audit/exports/${seg(id)}`),
      start: (body: { from: string; to: string; formats: string[] }) => request<ExportJobRes>("POST", `${V1}/audit/exports`, body),
      /** A plain link (the browser downloads the tar archive itself). */
      downloadUrl: (id: string) => `${V1}/audit/exports/${seg(id)}/download`,
    },
  },
  backups: {
    list: () => request<BackupListRes>("GET", `${V1}/backups`),
    get: (id: string) => request<SnapshotRecordRes>("GET", `${V1}/backups/${seg(id)}`),
    run: () => request<RunStartedRes>("POST", `${V1}/backups`),
    policy: () => request<BackupPolicyRes>("GET", `${V1}/backups/policy`),
    // The editor's body follows the daemon's policyInputSchema (targets as entered, secrets by target name).
    savePolicy: (body: unknown) => request<BackupPolicyRes>("PUT", `${V1}/backups/policy`, body),
    // The body follows the daemon's targetTestRequest (a target as entered, and its secrets if typed).
    testTarget: (body: { target: unknown; secrets?: Record<string, string> }) => request<TargetTestRes>("POST", `${V1}/backups/targets/test`, body),
    pitr: () => request<PitrStatusRes>("GET", `${V1}/backups/pitr`),
    pitrDrills: () => request<PitrDrillRes[]>("GET", `${V1}/backups/pitr/drills`),
    verify: (id: string) => request<VerifyResultRes>("POST", `${V1}/backups/${seg(id)}/verify`, {}),
    restore: (id: string, body: RestoreReq) => request<RestoreOutcomeRes>("POST", `${V1}/backups/${seg(id)}/restore`, body),
    /** A plain link (the browser downloads the script itself). */
    recoveryScriptUrl: `${V1}/backups/recovery-script`,
  },
  alerts: {
    list: (state: "open" | "resolved" | "all" = "open") => request<AlertListRes>("GET", `${V1}/alerts?state=${state}`),
    summary: () => request<AlertSummaryRes>("GET", `${V1}/alerts/summary`),
    get: (id: string) => request<AlertDetailRes>("GET", `${V1}/alerts/${seg(id)}`),
    acknowledge: (id: string, note: string) => request<AlertViewRes>("POST", `${V1}/alerts/${seg(id)}/acknowledge`, { note }),
    channels: {
      list: () => request<{ channels: AlertChannelViewRes[] }>("GET", `${V1}/alert-channels`),
      // The body follows the daemon's alertChannelInput (type, name, settings, password for e-mail).
      create: (body: unknown) => request<AlertChannelViewRes>("POST", `${V1}/alert-channels`, body),
      remove: (id: string) => request<void>("DELETE", `${V1}/alert-channels/${seg(id)}`),
      test: (id: string) => request<AlertChannelTestRes>("POST", `${V1}/alert-channels/${seg(id)}/test`),
    },
  },
  jobs: {
    list: () => request<JobListRes>("GET", `${V1}/jobs`),
    runs: (name: string, limit = 20) => request<JobRunsRes>("GET", `${V1}/jobs/${seg(name)}/runs${query({ limit })}`),
    /** Answers at once with the started run; destructive jobs need step-up (wrap in stepUp.run). */
    runNow: (name: string) => request<JobRunStartedRes>("POST", `${V1}/jobs/${seg(name)}/run`),
  },
  retention: {
    rules: () => request<RetentionRulesRes>("GET", `${V1}/retention/rules`),
    /** The next run's counts per class; with a proposed period for one class, under that change (the dry run). */
    preview: (proposed?: { recordClass: RecordClass; periodDays: number; trigger?: Trigger }) =>
      request<RetentionPreviewRes>("GET", `${V1}/retention/preview${query({ ...proposed })}`),
    changeRule: (recordClass: RecordClass, body: RetentionRuleChangeReq) => request<RuleChangeResultRes>("PUT", `${V1}/retention/rules/${seg(recordClass)}`, body),
    holds: () => request<RetentionHoldsRes>("GET", `${V1}/retention/holds`),
    placeHold: (body: { recordClass: RecordClass | null; reason: string }) => request<RetentionHoldRes>("POST", `${V1}/retention/holds`, body),
    releaseHold: (id: string, reason: string) => request<RetentionHoldRes>("POST", `${V1}/retention/holds/${seg(id)}/release`, { reason }),
    runs: () => request<RetentionRunsRes>("GET", `${V1}/retention/runs`),
    certificate: (id: string) => request<DispositionCertificateRes>("GET", `${V1}/retention/runs/${seg(id)}/certificate`),
  },
  dataRights: {
    /** Holds on single patients (tenant and record-class holds are `retention.holds`). */
    patientHolds: () => request<LegalHoldListRes>("GET", `${V1}/legal-holds`),
    placePatientHold: (patientId: string, reason: string) => request<LegalHoldRes>("POST", `${V1}/patients/${seg(patientId)}/legal-holds`, { reason }),
    /** Step-up: wrap in stepUp.run. */
    releasePatientHold: (patientId: string, id: string, reason: string) =>
      request<LegalHoldRes>("POST", `${V1}/patients/${seg(patientId)}/legal-holds/${seg(id)}/release`, { reason }),
    deletions: () => request<DeletionRequestListRes>("GET", `${V1}/deletion-requests`),
    /** Erasure after the grace period (owner, step-up). */
    requestErasure: (patientId: string) => request<DeletionRequestRes>("DELETE", `${V1}/patients/${seg(patientId)}`),
    cancelErasure: (id: string) => request<DeletionRequestRes>("POST", `${V1}/deletion-requests/${seg(id)}/cancel`, {}),
    /** One patient's records as a JSON download (owner/admin, step-up; audited). */
    exportPatient: (patientId: string) => download(`${V1}/exports/patients/${seg(patientId)}?format=json`),
  },
  webhooks: {
    endpoints: () => request<EndpointListRes>("GET", `${V1}/webhooks`),
    rotateSecret: (id: string, body: EndpointRotateReq = {}) => request<EndpointWithSecretRes>("POST", `${V1}/webhooks/${seg(id)}/rotate-secret`, body),
    deliveries: (q: Partial<DeliveryQuery> = {}) => request<DeliveryListRes>("GET", `${V1}/webhooks/deliveries${query(q)}`),
    delivery: (id: string) => request<DeliveryDetailRes>("GET", `${V1}/webhooks/deliveries/${seg(id)}`),
    replay: (id: string) => request<DeliveryView>("POST", `${V1}/webhooks/deliveries/${seg(id)}/replay`),
  },
  sso: {
    /** The sign-in buttons of a tenant's login page (public). */
    providers: (tenant: string) => request<PublicProviderListRes>("GET", `${V1}/sso/providers${query({ tenant })}`),
    /** A "password" provider (LDAP / Active Directory): its path comes from `providers`. */
    passwordSignIn: (path: string, body: { username: string; password: string }) => request<SsoLoginRes>("POST", path, body),
    /** Signs out; for a session made through an IdP, where to go so the IdP signs out too. */
    logout: () => request<SsoLogoutRes>("POST", `${V1}/sso/logout`),
    /** Step-up at the IdP: where to send the browser to sign in again there (409 when this session cannot). */
    stepUp: (body: StepUpReq) => request<StepUpStartedRes>("POST", `${V1}/sso/step-up`, body),
  },
  identityProviders: {
    list: () => request<ProviderListRes>("GET", `${V1}/identity-providers`),
    create: (body: CreateProviderReq) => request<ProviderView>("POST", `${V1}/identity-providers`, body),
    update: (id: string, body: UpdateProviderReq) => request<ProviderView>("PATCH", `${V1}/identity-providers/${seg(id)}`, body),
    remove: (id: string) => request<void>("DELETE", `${V1}/identity-providers/${seg(id)}`),
    /** OIDC and SAML: no body, open `url`; LDAP: the test user's name and password, the result is ready at once (`url` null). */
    test: (id: string, body?: TestSignInReq) => request<TestStartedRes>("POST", `${V1}/identity-providers/${seg(id)}/test`, body),
    testResult: (id: string, testId: string) => request<TestResultRes>("GET", `${V1}/identity-providers/${seg(id)}/tests/${seg(testId)}`),
    rules: () => request<RuleListRes>("GET", `${V1}/identity-providers/rules`),
    saveRules: (rules: RuleInput[]) => request<SavedRulesRes>("PUT", `${V1}/identity-providers/rules`, { rules }),
    dryRun: (rules: RuleInput[]) => request<DryRunRes>("POST", `${V1}/identity-providers/rules/dry-run`, { rules }),
    approveRule: (id: string) => request<RuleView>("POST", `${V1}/identity-providers/rules/${seg(id)}/approve`),
    rejectRule: (id: string) => request<RuleListRes>("POST", `${V1}/identity-providers/rules/${seg(id)}/reject`),
    mfaPolicy: () => request<MfaPolicyRes>("GET", `${V1}/identity-providers/mfa-policy`),
    /** Needs step-up (wrap in stepUp.run). */
    setMfaPolicy: (body: MfaPolicyReq) => request<MfaPolicyRes>("PUT", `${V1}/identity-providers/mfa-policy`, body),
  },
  scimTokens: {
    list: () => request<ScimTokenListRes>("GET", `${V1}/scim-tokens`),
    create: (body: CreateScimTokenReq) => request<CreatedScimTokenRes>("POST", `${V1}/scim-tokens`, body),
    revoke: (id: string) => request<ScimTokenRes>("DELETE", `${V1}/scim-tokens/${seg(id)}`),
  },
  privilegedAccess: {
    /** An admin sees the tenant's requests and grants; everyone else their own. */
    list: () => request<PrivilegedAccessRes[]>("GET", `${V1}/privileged-access`),
    request: (body: PrivilegedAccessReq) => request<PrivilegedAccessRes>("POST", `${V1}/privileged-access`, body),
    /** approve needs step-up (wrap in stepUp.run). */
    act: (id: string, action: "approve" | "deny" | "end") => request<PrivilegedAccessRes>("POST", `${V1}/privileged-access/${seg(id)}/${action}`),
  },
  drills: {
    list: () => request<DrillRecordRes[]>("GET", `${V1}/drills`),
    get: (id: string) => request<DrillRecordRes>("GET", `${V1}/drills/${seg(id)}`),
    run: () => request<RunStartedRes>("POST", `${V1}/drills`, {}),
  },
};
