import type { Clock } from "../../daemon/clock.js";

/**
 * A clock tests move by hand: `startTestAppliance({ clock })` makes every service read it, so
 * idle timeouts, expiries and schedules are tested without waiting. Starts at the real time (so
 * codes from real tools such as `oathtool --totp` match) unless given a start.
 */
export class TestClock implements Clock {
  private ms: number;
  constructor(start: Date = new Date()) {
    this.ms = start.getTime();
  }
  now(): Date {
    return new Date(this.ms);
  }
  advance(ms: number): Date {
    this.ms += ms;
    return this.now();
  }
  advanceMinutes(minutes: number): Date {
    return this.advance(minutes * 60_000);
  }
  set(at: Date): void {
    this.ms = at.getTime();
  }
}
