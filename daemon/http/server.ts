import http from "node:http";
import https from "node:https";
import net, { type Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Express } from "express";
import { publicOrigin } from "../config/public-url.js";
import type { Config } from "../config/schema.js";
import { addressMatcher, parseProxyV2, PROXY_V2_SIGNATURE } from "./proxy-protocol.js";

import type { TlsCredentials } from "../tls/index.js";

export type { TlsCredentials };

export type RunningServer = {
  port: number;
  redirectPort?: number;
  /** Stops accepting, lets in-flight requests finish (up to `timeoutMs`), then cuts what remains. */
  close(timeoutMs: number): Promise<{ drained: boolean }>;
  /** Loads a renewed or imported certificate without dropping connections. */
  reloadCertificate(tls: TlsCredentials): void;
};

function listen(server: net.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      const address = server.address();
      resolve(typeof address === "object" && address ? address.port : port);
    });
  });
}

/** Tracks which connections are mid-request, so a drain can close idle keep-alives at once. */
function trackConnections(server: http.Server) {
  const busy = new Map<Socket, number>();
  // Requests arrive on the TLS socket, not the TCP socket under it: track the TLS one.
  server.on("secureConnection", (socket: Socket) => {
    busy.set(socket, busy.get(socket) ?? 0);
    socket.on("close", () => busy.delete(socket));
  });
  server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    busy.set(socket, (busy.get(socket) ?? 0) + 1);
    res.on("finish", () => busy.set(socket, Math.max(0, (busy.get(socket) ?? 1) - 1)));
  });
  return busy;
}

/**
 * What the listener offers. TLS 1.2 gets only ECDHE key exchange (forward secrecy) with AEAD
 * ciphers (GCM, ChaCha20-Poly1305), as BSI TR-02102-2 and Mozilla's "intermediate" profile ask:
 * no CBC (Lucky13, padding oracles), no static RSA key exchange (no forward secrecy, ROBOT), no
 * SHA-1 MACs. TLS 1.3's suites are all AEAD with forward secrecy. docs/hardening.md lists them.
 */
export const TLS_CIPHERS = [
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "TLS_AES_128_GCM_SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
].join(":");
const TLS_CURVES = "X25519:P-256:P-384";

function tlsOptions(config: Config, tls: TlsCredentials) {
  return {
    cert: tls.certPem,
    key: tls.keyPem,
    // TLS 1.0/1.1 are broken (RFC 8996); 1.2 is the floor, 1.3 selectable.
    minVersion: config.tls.minVersion,
    ciphers: TLS_CIPHERS,
    ecdhCurve: TLS_CURVES,
    honorCipherOrder: true,
  };
}

type ClientAddress = { address: string; port: number; family: string };

/**
 * Reads the PROXY v2 header a trusted proxy sends before the TLS bytes (at most `timeoutMs`). A
 * connection from a trusted proxy whose first byte is not the signature is the proxy's own (TLS
 * starts with 0x16); from anyone else no header is looked for, so a forged one fails the handshake.
 */
function readProxyHeader(socket: Socket, timeoutMs: number): Promise<ClientAddress | null | "invalid"> {
  return new Promise((resolve) => {
    let buffered = Buffer.alloc(0);
    const done = (outcome: ClientAddress | null | "invalid", rest?: Buffer) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.pause();
      if (rest && rest.length > 0) socket.unshift(rest);
      resolve(outcome);
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered[0] !== PROXY_V2_SIGNATURE[0]) return done(null, buffered);
      const header = parseProxyV2(buffered);
      if (header.kind === "incomplete") return;
      if (header.kind === "invalid") return done("invalid");
      done(header.source, buffered.subarray(header.length));
    };
    const onClose = () => done("invalid");
    const timer = setTimeout(() => done("invalid"), timeoutMs);
    socket.on("data", onData);
    socket.on("close", onClose);
  });
}

/**
 * The listener. A plain TCP server accepts connections, learns who the client is (the peer, or
 * the address a trusted proxy's PROXY v2 header names), applies the per-address cap to that
 * client, and hands the socket to the HTTPS server, which never listens itself (Node documents
 * injecting connections by emitting "connection"). One client address may hold at most
 * `maxConnectionsPerAddress` connections, so a flood of slow clients from one host cannot take the
 * process's connections from everyone else; counted before the TLS handshake, so a refused
 * connection costs none.
 */
function frontListener(server: https.Server, c: Config["server"]): net.Server {
  const trusted = addressMatcher(c.trustedProxies);
  const open = new Map<string, number>();
  // The TLS socket reports the TCP peer; requests must see the client the proxy named.
  const named = new Map<string, ClientAddress>();
  const peerKey = (s: { remoteAddress?: string; remotePort?: number }) => `${s.remoteAddress}|${s.remotePort}`;
  server.prependListener("secureConnection", (socket: TLSSocket) => {
    const client = named.get(peerKey(socket));
    if (!client) return;
    Object.defineProperty(socket, "remoteAddress", { value: client.address, configurable: true });
    Object.defineProperty(socket, "remotePort", { value: client.port, configurable: true });
    Object.defineProperty(socket, "remoteFamily", { value: client.family, configurable: true });
  });

  const admit = (socket: Socket, client: ClientAddress | null) => {
    const address = client?.address ?? socket.remoteAddress ?? "unknown";
    const n = open.get(address) ?? 0;
    if (n >= c.maxConnectionsPerAddress) {
      socket.destroy();
      return;
    }
    open.set(address, n + 1);
    const key = peerKey(socket);
    if (client) named.set(key, client);
    socket.once("close", () => {
      if (client) named.delete(key);
      const left = (open.get(address) ?? 1) - 1;
      if (left <= 0) open.delete(address);
      else open.set(address, left);
    });
    server.emit("connection", socket);
  };

  const front = net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    if (!c.proxyProtocol || !trusted(socket.remoteAddress)) return admit(socket, null);
    void readProxyHeader(socket, c.handshakeTimeoutMs).then((client) => {
      if (client === "invalid") socket.destroy();
      else admit(socket, client);
    });
  });
  front.maxConnections = c.maxConnections;
  return front;
}

/**
 * An idle keep-alive connection is closed after this long, announced as `Keep-Alive: timeout=5`
 * (docs/hardening.md, "Keep-alive and the reset a client can meet").
 */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;

export async function startHttpServers(app: Express, config: Config, tls: TlsCredentials): Promise<RunningServer> {
  const c = config.server;
  // Sized for a LAN appliance (docs/hardening.md, "Connections"): a hospital client finishes a
  // handshake and its headers in milliseconds, so a slow one holds nothing for long.
  const server = https.createServer(
    {
      ...tlsOptions(config, tls),
      handshakeTimeout: c.handshakeTimeoutMs,
      headersTimeout: c.headersTimeoutMs,
      requestTimeout: c.requestTimeoutMs,
      connectionsCheckingInterval: 1_000,
    },
    app,
  );
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.timeout = c.idleTimeoutMs;
  const busy = trackConnections(server);
  const front = frontListener(server, c);
  // Node starts the headers and request timeout checks of an HTTP server when it starts listening;
  // this one is fed by the front listener, so it is told so before the first connection arrives.
  server.emit("listening");
  const port = await listen(front, config.server.port, config.server.host);

  let redirect: http.Server | undefined;
  let redirectPort: number | undefined;
  if (config.server.redirectPort > 0) {
    // Plain HTTP exists only to send browsers to HTTPS; it serves nothing else.
    redirect = http.createServer((req, res) => {
      // The configured address (server.publicUrl), never the request's Host: a reflected Host lets anyone who can set it
      // (a poisoned cache, a rogue proxy) send staff to a look-alike site with a genuine-looking link.
      const path = (req.url ?? "/").startsWith("/") ? (req.url ?? "/") : "/";
      const target = `${publicOrigin(config, port)}${path}`;
      res.writeHead(308, { Location: target, "Content-Length": "0", Connection: "close" }).end();
    });
    redirectPort = await listen(redirect, config.server.redirectPort, config.server.host);
  }

  return {
    port,
    redirectPort,
    reloadCertificate(next) {
      server.setSecureContext(tlsOptions(config, next));
    },
    async close(timeoutMs) {
      // The front listener's close completes when its last TCP connection (under each TLS one) ends.
      const closed = new Promise<void>((resolve) => front.close(() => resolve()));
      server.close();
      redirect?.close();
      redirect?.closeAllConnections();
      // Idle keep-alive connections would hold close() open; busy ones finish their request first.
      for (const [socket, inFlight] of busy) if (inFlight === 0) socket.destroy();
      server.on("request", (_req: http.IncomingMessage, res: http.ServerResponse) => res.setHeader("Connection", "close"));
      const drainCheck = setInterval(() => {
        for (const [socket, inFlight] of busy) if (inFlight === 0) socket.destroy();
      }, 50);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), timeoutMs);
      });
      const outcome = await Promise.race([closed.then(() => false), timedOut]);
      clearInterval(drainCheck);
      clearTimeout(timer);
      if (outcome) server.closeAllConnections();
      return { drained: !outcome };
    },
  };
}
