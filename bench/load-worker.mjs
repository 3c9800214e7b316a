// bench/load-client.mjs in a worker thread, so the load is generated beside the event loop measured, not on it.
import { parentPort, workerData } from "node:worker_threads";
import { closedLoop, openLoop } from "./load-client.mjs";

const { mode, target, opts } = workerData;
parentPort.postMessage(await (mode === "open" ? openLoop(target, opts) : closedLoop(target, opts)));
