// Container liveness probe: exits 0 when GET /healthz on the local HTTPS listener answers 200
// within 3 seconds, 1 otherwise. Standard library only, because the runtime image has no curl.
//
// Certificate verification is off on purpose and only here: the daemon's certificate is issued
// by its own internal CA (or by the hospital's), and the probe runs inside the container against
// the loopback address, so there is no network path an attacker could sit on. Never reuse this
// for a connection that leaves the host.
import https from "node:https";

const port = Number(process.env.WARDKEEP_PORT ?? 8443);
const deadlineMs = 3000;

// 127.0.0.1 rather than "localhost": Node resolves localhost to ::1 first on Debian images,
// while the daemon may listen on IPv4 only (host 0.0.0.0).
const req = https.get(
  {
    host: "127.0.0.1",
    port,
    path: "/healthz",
    rejectUnauthorized: false,
    timeout: deadlineMs,
    headers: { "user-agent": "wardkeep-healthcheck" },
  },
  (res) => {
    res.resume();
    process.exit(res.statusCode === 200 ? 0 : 1);
  },
);
req.on("timeout", () => req.destroy(new Error(`no answer within ${deadlineMs} ms`)));
req.on("error", (err) => {
  console.error(`healthcheck: ${err.message}`);
  process.exit(1);
});
// Belt and braces: a stalled TLS handshake must not outlive the deadline.
setTimeout(() => {
  console.error(`healthcheck: no answer within ${deadlineMs} ms`);
  process.exit(1);
}, deadlineMs).unref();
