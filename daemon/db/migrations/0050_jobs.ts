/**
 * The job runner (daemon/jobs/, docs/jobs.md): what is scheduled and every run of it.
 *
 * `job_schedules` has one row per job, written by every replica's runner at start (the schedule
 * it computed, its period, since when it has been scheduled) so the API and the overdue check see
 * every job whichever replica answers. `job_runs` keeps each run: when, which replica, outcome,
 * counts, error. A scheduled run is keyed by its slot (the cron fire time): the partial unique
 * index lets exactly one replica insert the row of a slot, and only the replica that inserted it
 * runs the job, so with several replicas each schedule fires once.
 */
export const sql = `
CREATE TABLE job_schedules (
  job           text PRIMARY KEY CHECK (job ~ '^[a-z][a-z0-9-]{1,62}$'),
  schedule      text,
  period_ms     bigint CHECK (period_ms > 0),
  destructive   boolean NOT NULL DEFAULT false,
  summary       text NOT NULL,
  since         timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL,
  overdue_since timestamptz
);
ALTER TABLE job_schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_schedules FORCE ROW LEVEL SECURITY;
CREATE POLICY job_schedules_appliance ON job_schedules
  USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE ON job_schedules TO {{app_role}};

CREATE TABLE job_runs (
  id           bigserial PRIMARY KEY,
  job          text NOT NULL,
  trigger      text NOT NULL CHECK (trigger IN ('schedule', 'start', 'manual')),
  -- The cron fire time of a scheduled run (the same on every replica); NULL otherwise.
  slot         timestamptz,
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz,
  outcome      text NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped', 'interrupted')),
  counts       jsonb NOT NULL DEFAULT '{}'::jsonb,
  error        text CHECK (length(error) <= 500),
  replica      text NOT NULL,
  requested_by uuid REFERENCES users (id),
  CHECK ((trigger = 'schedule') = (slot IS NOT NULL)),
  CHECK ((outcome = 'running') = (finished_at IS NULL))
);
CREATE UNIQUE INDEX job_runs_slot_key ON job_runs (job, slot) WHERE slot IS NOT NULL;
CREATE INDEX job_runs_job_idx ON job_runs (job, id DESC);
CREATE INDEX job_runs_success_idx ON job_runs (job, finished_at DESC) WHERE outcome = 'succeeded';
ALTER TABLE job_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY job_runs_appliance ON job_runs
  USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE, DELETE ON job_runs TO {{app_role}};
GRANT USAGE ON SEQUENCE job_runs_id_seq TO {{app_role}};
`;
