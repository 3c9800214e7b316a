import type { LoginRes, SessionInfoRes, SupportAccessRes } from "../../../daemon/auth/schema.js";
import { api, ApiError, onApiResponse, setCsrfToken, type Problem } from "./api";
import { navigate } from "./route.svelte";

/**
 * The signed-in session, as the server reports it. The server enforces automatic logoff
 * (45 CFR 164.312(a)(2)(iii)); this store only warns ahead of it. Its clock is the server's
 * deadline: `GET /api/v1/auth/session` reports `idleExpiresAt` without extending the session, so
 * polling it never keeps an unattended screen signed in, and any other request (activity, here
 * or in another tab) moves the deadline, which the next poll picks up. The warning opens only
 * after a poll confirms the deadline is near, and the session ends in the UI only when the
 * server answers that it has ended.
 */
export type SupportAccess = SupportAccessRes;
export type SessionInfo = SessionInfoRes;
export type SessionUser = SessionInfo["user"];
export type LoginResult = LoginRes;

export type Phase = "loading" | "signed-out" | "mfa" | "enroll" | "active";

/** How long before the idle deadline the warning opens. */
export const WARNING_MS = 2 * 60_000;
/** Regular poll: picks up activity in other tabs and sessions ended elsewhere. */
const POLL_MS = 60_000;
/** Inside the warning window, confirm with the server at most this often. */
const CONFIRM_MS = 5_000;

const ENDED_REASONS = new Set(["idle_timeout", "session_expired", "session_revoked"]);

function endedMessage(problem: Problem | undefined): string {
  switch (problem?.reason) {
    case "idle_timeout": {
      const minutes = /after (\d+) minutes/.exec(problem.detail ?? "")?.[1];
      return `You were signed out automatically after ${minutes ? `${minutes} minutes` : "a period"} without activity. Sign in again to continue.`;
    }
    case "session_expired":
      return "Your session reached its maximum lifetime. Sign in again to continue.";
    case "session_revoked":
      return "Your session was ended (signed out elsewhere, or by an administrator). Sign in again to continue.";
    default:
      return "Your session has ended. Sign in again to continue.";
  }
}

class SessionStore {
  phase = $state<Phase>("loading");
  info = $state<SessionInfo | null>(null);
  /** Why the last session ended; the sign-in page shows it. */
  endedMessage = $state<string | null>(null);
  /** Ticks every second while signed in, for countdowns. */
  now = $state(Date.now());
  /** "idle": automatic logoff is near; "lifetime": the absolute lifetime is near (cannot be extended). */
  warning = $state<null | "idle" | "lifetime">(null);
  /** A one-off message for the next screen (e.g. recovery codes running low). */
  notice = $state<string | null>(null);

  #timer: ReturnType<typeof setInterval> | undefined;
  /** Appliance clock minus this workstation's clock, from the last session read (ms). */
  #skewMs = 0;
  #lastPoll = 0;
  #polling: Promise<void> | null = null;
  #lifetimeDismissed = false;
  #refreshSoon: ReturnType<typeof setTimeout> | undefined;

  constructor() {
    onApiResponse((r) => {
      if (this.phase !== "active") return;
      if (r.status === 401 && r.problem && (ENDED_REASONS.has(r.problem.reason ?? "") || r.problem.reason === undefined)) {
        this.#ended(r.problem);
        return;
      }
      // Support access started or stopped (approved, ended early, expired): learn the details.
      if (r.status !== 401 && (r.supportAccess !== null) !== Boolean(this.info?.supportAccess)) this.#scheduleRefresh();
    });
  }

  get user(): SessionUser | null {
    return this.info?.user ?? null;
  }
  get support(): SupportAccess | null {
    return this.info?.supportAccess ?? null;
  }
  /**
   * The appliance's time now, as far as this page can tell: the workstation's clock corrected by
   * the skew the last session read measured. Every deadline the server sends is compared with it,
   * so a workstation clock that is minutes off neither warns too early nor too late.
   */
  get serverNow(): number {
    return this.now + this.#skewMs;
  }
  get idleRemainingMs(): number | null {
    return this.info?.idleExpiresAt ? Date.parse(this.info.idleExpiresAt) - this.serverNow : null;
  }
  get lifetimeRemainingMs(): number | null {
    return this.info?.expiresAt ? Date.parse(this.info.expiresAt) - this.serverNow : null;
  }

  /** Reads the session from the server (never extends it) and moves to the matching phase. */
  async refresh(): Promise<void> {
    const sent = Date.now();
    try {
      const info = await api.auth.session();
      // The server's clock read falls somewhere in the round trip: take its middle.
      if (info.serverTime) this.#skewMs = Date.parse(info.serverTime) - (sent + Date.now()) / 2;
      this.#apply(info);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        if (this.phase === "active") this.#ended(err.problem);
        else this.#signedOut();
        return;
      }
      throw err;
    } finally {
      this.#lastPoll = Date.now();
    }
  }

  async signIn(email: string, password: string): Promise<LoginResult> {
    const result = await api.auth.login({ email, password });
    setCsrfToken(result.csrfToken);
    this.endedMessage = null;
    await this.refresh();
    return result;
  }

  /** Sign-in with a directory user name and password through an LDAP / Active Directory provider. */
  async signInWithDirectory(path: string, username: string, password: string): Promise<LoginResult> {
    const result = await api.sso.passwordSignIn(path, { username, password });
    setCsrfToken(result.csrfToken);
    this.endedMessage = null;
    await this.refresh();
    return result;
  }

  /** Second step of sign-in, and step-up: a TOTP code or a recovery code. */
  async verify(input: { code: string } | { recoveryCode: string }): Promise<{ recoveryCodesLeft?: number }> {
    const result = await api.auth.verify(input);
    await this.refresh();
    return result;
  }

  async signOut(message: string | null = "You have signed out."): Promise<void> {
    let idpSignOut: string | null = null;
    try {
      // For a session made through an identity provider, the answer says where the IdP signs out too.
      idpSignOut = (await api.sso.logout()).redirectUrl;
    } catch (err) {
      // Already ended server-side: signing out is done either way.
      if (!(err instanceof ApiError && err.status === 401)) throw err;
    }
    this.endedMessage = message;
    this.#signedOut();
    if (idpSignOut) {
      location.assign(idpSignOut);
      return;
    }
    navigate("/login");
  }

  /**
   * Any authenticated request counts as activity and moves the server's idle deadline; the
   * cheapest one every role may make without an audit entry is the public seal-state read.
   */
  async staySignedIn(): Promise<void> {
    await api.keys.sealStatus();
    await this.refresh();
    if (this.warning === "idle") this.warning = null;
  }

  dismissLifetimeWarning() {
    this.#lifetimeDismissed = true;
    this.warning = null;
  }

  /** Called after the session's second factor or enrollment completes elsewhere in the UI. */
  async reload() {
    await this.refresh();
  }

  #apply(info: SessionInfo) {
    this.info = info;
    if (info.csrfToken) setCsrfToken(info.csrfToken);
    const phase: Phase = info.stage === "active" ? "active" : info.stage === "mfa_required" ? "mfa" : "enroll";
    this.phase = phase;
    if (phase === "active") this.#startTimer();
    else this.#stopTimer();
    this.#evaluate();
  }

  #signedOut() {
    this.#stopTimer();
    setCsrfToken(undefined);
    this.info = null;
    this.warning = null;
    this.notice = null;
    this.#lifetimeDismissed = false;
    this.phase = "signed-out";
  }

  #ended(problem: Problem | undefined) {
    this.endedMessage = endedMessage(problem);
    this.#signedOut();
    navigate("/login");
  }

  #scheduleRefresh() {
    clearTimeout(this.#refreshSoon);
    this.#refreshSoon = setTimeout(() => void this.#poll(), 250);
  }

  #startTimer() {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.#tick(), 1000);
  }

  #stopTimer() {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #poll(): Promise<void> {
    this.#polling ??= this.refresh()
      .catch(() => {
        /* network trouble: the next tick tries again; the server still enforces the timeout */
      })
      .finally(() => {
        this.#polling = null;
      });
    return this.#polling;
  }

  #tick() {
    this.now = Date.now();
    const idle = this.idleRemainingMs;
    const lifetime = this.lifetimeRemainingMs;
    const near = (idle !== null && idle <= WARNING_MS) || (lifetime !== null && lifetime <= WARNING_MS);
    const sinceLastPoll = this.now - this.#lastPoll;
    if ((near && sinceLastPoll >= CONFIRM_MS) || sinceLastPoll >= POLL_MS) {
      void this.#poll();
      return;
    }
    this.#evaluate();
  }

  /** Opens or closes the warning from the deadline the last poll reported. */
  #evaluate() {
    this.now = Date.now();
    const idle = this.idleRemainingMs;
    const lifetime = this.lifetimeRemainingMs;
    if (this.phase !== "active") {
      this.warning = null;
      return;
    }
    if (lifetime !== null && lifetime <= WARNING_MS && (idle === null || lifetime <= idle)) {
      this.warning = this.#lifetimeDismissed ? null : "lifetime";
    } else if (idle !== null && idle <= WARNING_MS) {
      this.warning = "idle";
    } else {
      this.warning = null;
    }
  }
}

export const session = new SessionStore();
