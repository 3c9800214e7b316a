// The benches' load generator: keep-alive HTTPS/1.1 connections over node:tls, each sending one
// request, precomputed once as bytes, as soon as its last answer is read (closed loop), or when
// a request falls due (open loop). It parses only what it needs of an answer (the status, and
// where the body ends) and keeps every latency. It is measurement apparatus: on a 2-core machine
// its CPU is taken from the process measured, so it does as little per request as it can (the
// comparison with autocannon: docs/records.md, "Levers, seventh session"). Plain JavaScript:
// worker threads and child processes do not go through the tsx loader.
import tls from "node:tls";

const CRLF2 = Buffer.from("\r\n\r\n");

/** The request as bytes: the same for every send. */
function requestBytes({ url, method, headers = {}, body }) {
  const u = new URL(url);
  const lines = [`${method} ${u.pathname}${u.search} HTTP/1.1`, `host: ${u.host}`, "connection: keep-alive"];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
  if (body !== undefined || method !== "GET") lines.push(`content-length: ${payload.length}`);
  return Buffer.concat([Buffer.from(lines.join("\r\n") + "\r\n\r\n", "latin1"), payload]);
}

/**
 * Where an answer in `buf` ends, or -1 while it is incomplete: after its headers and a body of
 * Content-Length bytes, or after the last chunk of a chunked body.
 */
function answerEnd(buf) {
  const head = buf.indexOf(CRLF2);
  if (head < 0) return { end: -1 };
  const headers = buf.latin1Slice(0, head).toLowerCase();
  const status = Number(headers.slice(9, 12));
  const close = /\r\nconnection: *close/.test(headers);
  const length = /\r\ncontent-length: *(\d+)/.exec(headers);
  if (length) {
    const end = head + 4 + Number(length[1]);
    return { end: buf.length >= end ? end : -1, status, close };
  }
  if (/\r\ntransfer-encoding: *chunked/.test(headers)) {
    let at = head + 4;
    for (;;) {
      const lineEnd = buf.indexOf("\r\n", at, "latin1");
      if (lineEnd < 0) return { end: -1 };
      const size = parseInt(buf.latin1Slice(at, lineEnd), 16);
      if (Number.isNaN(size)) throw new Error("load client: a chunk size that is not hexadecimal");
      const next = lineEnd + 2 + size + 2;
      if (buf.length < next) return { end: -1 };
      if (size === 0) return { end: next, status, close };
      at = next;
    }
  }
  // No body (204, 304) or one that ends with the connection: none of the benches' answers.
  if (status === 204 || status === 304) return { end: head + 4, status, close };
  throw new Error(`load client: an answer (${status}) with neither Content-Length nor chunked encoding`);
}

/** Below the daemon's keepAliveTimeout (5 s), with a margin for the scheduling of two processes. */
const IDLE_REUSE_MS = 4000;

/**
 * One keep-alive connection. `send(done)` writes the request; `done(status)` is called when the
 * whole answer has arrived (status 0: the connection failed, and is opened again for the next send).
 */
class Connection {
  idleSince = 0;

  constructor(target, bytes) {
    this.target = target;
    this.bytes = bytes;
    this.socket = undefined;
    this.pending = undefined;
    this.buf = Buffer.alloc(0);
  }

  open() {
    const u = new URL(this.target.url);
    const socket = tls.connect({ host: u.hostname, port: Number(u.port || 443), rejectUnauthorized: false, servername: u.hostname === "127.0.0.1" ? undefined : u.hostname });
    socket.setNoDelay(true);
    socket.on("data", (chunk) => this.onData(chunk));
    const fail = () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      const done = this.pending;
      this.pending = undefined;
      this.buf = Buffer.alloc(0);
      if (done) done(0);
    };
    socket.on("error", fail);
    socket.on("close", fail);
    this.socket = socket;
  }

  send(done) {
    // A connection idle for nearly the server's keep-alive timeout (5 s, `Keep-Alive: timeout=5`)
    // may be closing as the request goes out; HTTP clients open a new one instead (docs/hardening.md).
    if (this.socket && performance.now() - this.idleSince > IDLE_REUSE_MS) {
      this.socket.destroy();
      this.socket = undefined;
    }
    if (!this.socket) this.open();
    this.pending = done;
    this.socket.write(this.bytes);
  }

  onData(chunk) {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const { end, status, close } = answerEnd(this.buf);
    if (end < 0) return;
    this.buf = end === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(end);
    if (close) {
      const socket = this.socket;
      this.socket = undefined;
      socket.destroy();
    }
    const done = this.pending;
    this.pending = undefined;
    this.idleSince = performance.now();
    if (done) done(status);
  }

  close() {
    const socket = this.socket;
    this.socket = undefined;
    socket?.destroy();
  }
}

const percentile = (sorted, q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] : NaN);

/**
 * Closed loop: `connections` connections, each sending its next request as soon as its answer
 * is in, for `seconds`. Resolves to { requests, non2xx, errors, rps, p50, p99 } (latencies in ms).
 */
export function closedLoop(target, { connections, seconds }) {
  const bytes = requestBytes(target);
  const latencies = [];
  let non2xx = 0;
  let errors = 0;
  let stopping = false;
  const started = performance.now();
  return new Promise((resolve) => {
    let open = connections;
    const conns = Array.from({ length: connections }, () => new Connection(target, bytes));
    const finished = () => {
      if (--open > 0) return;
      const elapsed = (performance.now() - started) / 1000;
      latencies.sort((a, b) => a - b);
      resolve({ requests: latencies.length, non2xx, errors, rps: latencies.length / elapsed, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) });
    };
    for (const conn of conns) {
      const loop = () => {
        if (stopping) {
          conn.close();
          finished();
          return;
        }
        const sentAt = performance.now();
        conn.send((status) => {
          if (status === 0) errors++;
          else {
            latencies.push(performance.now() - sentAt);
            if (status < 200 || status > 299) non2xx++;
          }
          loop();
        });
      };
      loop();
    }
    setTimeout(() => (stopping = true), seconds * 1000);
  });
}

/**
 * Open loop: request i is due at start + i / rate whether or not earlier ones have been
 * answered, sent on a free connection (or as soon as one is free), its latency counted from
 * when it was due (no coordinated omission). The first `warmupSeconds` of requests open the
 * connections and are not counted.
 */
export function openLoop(target, { rate, seconds, connections, warmupSeconds = 2 }) {
  const bytes = requestBytes(target);
  const warm = Math.round(rate * warmupSeconds);
  const total = warm + Math.round(rate * seconds);
  const latencies = [];
  let non2xx = 0;
  let errors = 0;
  let done = 0;
  const idle = Array.from({ length: connections }, () => new Connection(target, bytes));
  const all = [...idle];
  const due = []; // indices due but waiting for a free connection
  const start = performance.now();
  const dueAt = (i) => start + (i * 1000) / rate;
  return new Promise((resolve) => {
    const finish = () => {
      clearInterval(tick);
      clearTimeout(giveUp);
      for (const c of all) c.close();
      const elapsed = (performance.now() - start) / 1000 - warmupSeconds;
      latencies.sort((a, b) => a - b);
      resolve({ p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), rps: latencies.length / elapsed, non2xx, errors: errors + (total - done), latencies });
    };
    const send = (conn, i) => {
      conn.send((status) => {
        if (i >= warm) {
          if (status === 0) errors++;
          else {
            latencies.push(performance.now() - dueAt(i));
            if (status < 200 || status > 299) non2xx++;
          }
        }
        if (++done === total) return finish();
        if (due.length > 0) send(conn, due.shift());
        else idle.push(conn);
      });
    };
    let next = 0;
    // A 1 ms tick sends every request that is due.
    const tick = setInterval(() => {
      const now = performance.now();
      while (next < total && dueAt(next) <= now) {
        const conn = idle.pop();
        if (conn) send(conn, next);
        else due.push(next);
        next++;
      }
      if (next >= total) clearInterval(tick);
    }, 1);
    const giveUp = setTimeout(finish, (warmupSeconds + seconds + 30) * 1000);
  });
}

// As a child process (`node bench/load-client.mjs '<json>'`), so that its CPU is its own
// (bench/records-cpu.ts): runs the closed loop and prints the result as JSON.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const { target, connections, seconds } = JSON.parse(process.argv[2]);
  const result = await closedLoop(target, { connections, seconds });
  process.stdout.write(JSON.stringify(result) + "\n");
}
