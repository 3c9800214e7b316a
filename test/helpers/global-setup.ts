// Replaced by the embedded PostgreSQL global setup (see test/helpers/postgres.ts).
export default async function setup() {}
