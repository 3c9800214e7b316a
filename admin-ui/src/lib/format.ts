/** Presentation helpers: dates in the viewer's locale and time zone, sizes, durations, role names. */

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "—" : dateTime.format(d);
}

const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

export function formatDate(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "—" : dateOnly.format(d);
}

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  return timeOnly.format(new Date(iso));
}

/** "140 ms", "2.4 s", "38 s", "3 min", "2 h 5 min", "4 days": a sub-second run is never "0 s". */
export function formatDuration(ms: number): string {
  const minutes = Math.round(ms / 60_000);
  if (Math.abs(ms) < 1000) return `${Math.round(ms)} ms`;
  if (Math.abs(ms) < 10_000) return `${(Math.round(ms / 100) / 10).toFixed(1)} s`;
  if (Math.abs(ms) < 60_000) return `${Math.round(ms / 1000)} s`;
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  return `${Math.round(hours / 24)} days`;
}

/** Time left until a deadline, for a countdown of days: "29 days 23 h", "1 day 0 h", "5 h 12 min", "12 min". */
export function formatTimeLeft(ms: number): string {
  const minutes = Math.max(0, Math.floor(ms / 60_000));
  const days = Math.floor(minutes / 1440);
  const hours = Math.floor((minutes % 1440) / 60);
  if (days > 0) return `${days} ${days === 1 ? "day" : "days"} ${hours} h`;
  if (hours > 0) return `${hours} h ${minutes % 60} min`;
  return `${minutes} min`;
}

/** m:ss for a countdown. */
export function formatCountdown(ms: number): string {
  const total = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatCount(n: number | null | undefined): string {
  return n === null || n === undefined ? "—" : n.toLocaleString();
}

const ROLE_LABELS: Record<string, string> = {
  super_admin: "Super-admin",
  owner: "Owner",
  admin: "Admin",
  practitioner: "Practitioner",
  front_desk: "Front desk",
  auditor: "Auditor",
  support: "Support",
};

export function roleLabel(role: string): string {
  return ROLE_LABELS[role] ?? role;
}

/** Roles an account can hold at appliance level and inside a tenant (invites.ts keeps them apart). */
export const APPLIANCE_ROLES = ["super_admin", "support"];
export const TENANT_ROLES = ["owner", "admin", "practitioner", "front_desk", "auditor"];

export function shortId(id: string | null | undefined): string {
  return id ? id.slice(0, 8) : "—";
}
