import http from "node:http";
import express from "express";
import { sendJson } from "../daemon/kernel/define-route.js";
import type { BenchRow } from "./run.js";

/**
 * The CPU of sending one JSON answer (`npm run bench -- json-answer`): Express's `res.json`
 * against the kernel's `sendJson` (daemon/kernel/define-route.ts), which every defined route
 * answers through. Both on real node ServerResponse objects carrying Express's prototypes, with
 * no socket (the bytes are buffered, so the socket write, the same for both, is not in it), a note
 * write's answer as the body, in alternating rounds; the cost of making the objects is measured
 * alone and taken off. µs per answer, the median of the rounds.
 */
const ROUNDS = Number(process.env.BENCH_JSON_ROUNDS ?? 8);
const N = Number(process.env.BENCH_JSON_ANSWERS ?? 20_000);

const app = express();
app.set("etag", false);
const reply = {
  id: "0b6f6a3e-7a51-4f7e-9d7b-3b1c0a8d2e11",
  patientId: "5c0f3f8e-1b1a-4a43-8a4e-2a1d6f0b9c77",
  kind: "note",
  status: "draft",
  version: 1,
  body: "Patient reports intermittent chest discomfort on exertion for two weeks, relieved by rest. ".repeat(8),
  createdAt: new Date(),
  createdBy: "9a7d2c1e-4b3f-4e5a-8c6d-7f0e1a2b3c4d",
};

function exchange() {
  const req = new http.IncomingMessage(null as never);
  req.method = "POST";
  req.headers = { "content-type": "application/json" };
  const res = new http.ServerResponse(req);
  Object.setPrototypeOf(req, app.request);
  Object.setPrototypeOf(res, app.response);
  Object.assign(req, { res, app });
  Object.assign(res, { req, app, locals: {} });
  return { req: req as unknown as express.Request, res: res as unknown as express.Response };
}

function perCall(fn: () => void): number {
  for (let i = 0; i < N / 10; i++) fn();
  const before = process.cpuUsage();
  for (let i = 0; i < N; i++) fn();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / N;
}

export async function run(): Promise<BenchRow[]> {
  const express_: number[] = [];
  const kernel: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const objects = perCall(() => exchange());
    const a = () => {
      const { res } = exchange();
      res.status(201).json(reply);
    };
    const b = () => {
      const { req, res } = exchange();
      sendJson(req, res, 201, reply);
    };
    for (const [side, fn] of r % 2
      ? ([
          ["kernel", b],
          ["express", a],
        ] as const)
      : ([
          ["express", a],
          ["kernel", b],
        ] as const)) {
      (side === "express" ? express_ : kernel).push(perCall(fn) - objects);
    }
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  process.stderr.write(`json-answer by round, sendJson ÷ res.json: ${kernel.map((k, i) => (k / express_[i]!).toFixed(2)).join(", ")}\n`);
  return [
    {
      name: "one JSON answer (a note write's), sendJson against res.json",
      value: median(kernel),
      unit: "µs",
      baseline: median(express_),
      ratio: median(kernel) / median(express_),
    },
  ];
}
