import type { AlertSummaryRes } from "../../../daemon/alerts/schema.js";
import { api, onApiResponse } from "./api";

/**
 * The top bar's count of open alerts: read when the console opens, every minute, and again after
 * anything acknowledges an alert, so the badge and the alerts centre agree.
 */
class AlertCountStore {
  summary = $state<AlertSummaryRes | null>(null);
  private timer: ReturnType<typeof setInterval> | undefined;

  async refresh(): Promise<void> {
    try {
      this.summary = await api.alerts.summary();
    } catch {
      this.summary = null; // signed out, or not allowed: no badge rather than a wrong one
    }
  }

  start(): () => void {
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), 60_000);
    const off = onApiResponse((info) => {
      if (info.method === "POST" && /\/alerts\/[^/]+\/acknowledge$/.test(info.path) && info.status < 300) void this.refresh();
    });
    return () => {
      clearInterval(this.timer);
      off();
      this.summary = null;
    };
  }
}

export const alertCount = new AlertCountStore();
