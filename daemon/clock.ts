/** Time as the appliance sees it; tests pass a controllable clock for timeouts and schedules. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };
