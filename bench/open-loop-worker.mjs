// The load generator of bench/open-loop.ts, in a worker thread so the server's event loop is not
// the generator's. Plain JavaScript: worker threads do not go through the tsx loader.
import https from "node:https";
import { parentPort, workerData } from "node:worker_threads";

const { url, method, headers, body, rate, seconds, connections, warmupSeconds = 2 } = workerData;
const agent = new https.Agent({ keepAlive: true, maxSockets: connections, rejectUnauthorized: false });
// The first `warmupSeconds` of requests open the keep-alive connections (TLS handshakes) and are
// not counted.
const warm = Math.round(rate * warmupSeconds);
const total = warm + Math.round(rate * seconds);
const latencies = [];
let non2xx = 0;
let errors = 0;
let done = 0;

function send(i, scheduledAt) {
  const req = https.request(url, { method, headers: { ...headers, ...(body ? { "content-length": Buffer.byteLength(body) } : {}) }, agent }, (res) => {
    res.on("data", () => undefined);
    res.on("end", () => {
      // Measured from when the request was due, not from when a socket was free: a slow answer
      // delays the requests queued behind it, and that wait counts (no coordinated omission).
      if (i >= warm) {
        latencies.push(performance.now() - scheduledAt);
        if (res.statusCode < 200 || res.statusCode > 299) non2xx++;
      }
      finish();
    });
  });
  req.on("error", () => {
    if (i >= warm) errors++;
    finish();
  });
  req.end(body);
}

let resolveAll;
const all = new Promise((r) => (resolveAll = r));
function finish() {
  if (++done === total) resolveAll();
}

const start = performance.now();
let next = 0;
// Requests are due at start + i / rate; a 1 ms tick sends every one that is due.
const tick = setInterval(() => {
  const now = performance.now();
  while (next < total && start + (next * 1000) / rate <= now) {
    send(next, start + (next * 1000) / rate);
    next++;
  }
  if (next >= total) clearInterval(tick);
}, 1);
await Promise.race([all, new Promise((r) => setTimeout(r, (warmupSeconds + seconds + 30) * 1000))]);
const elapsed = (performance.now() - start) / 1000 - warmupSeconds;
agent.destroy();
latencies.sort((a, b) => a - b);
const at = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)] : NaN);
parentPort.postMessage({ p50: at(0.5), p99: at(0.99), rps: latencies.length / elapsed, non2xx, errors: errors + (total - done) });
