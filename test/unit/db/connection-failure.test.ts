import pg from "pg";
import { describe, expect, it } from "vitest";
import { isConnectionFailure } from "../../../daemon/db/circuit.js";

describe("isConnectionFailure: which errors mean the database went away", () => {
  it("counts a failed socket call as one, though EPIPE has the shape of a SQLSTATE", () => {
    // What the daemon logged as a 500 while PostgreSQL was killed under writes: Node's system error
    // for a write on a connection the server had dropped (a system error names its failed call).
    const epipe = Object.assign(new Error("write EPIPE"), { code: "EPIPE", errno: -32, syscall: "write" });
    expect(isConnectionFailure(epipe)).toBe(true);
    const reset = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET", errno: -104, syscall: "read" });
    expect(isConnectionFailure(reset)).toBe(true);
  });

  it("counts the server's shutdown and connection SQLSTATEs, and not a statement the server refused", () => {
    const refused = (code: string) => Object.assign(new pg.DatabaseError("refused", 0, "error"), { code });
    expect(isConnectionFailure(refused("57P01"))).toBe(true); // admin shutdown
    expect(isConnectionFailure(refused("08006"))).toBe(true); // connection failure
    expect(isConnectionFailure(refused("23505"))).toBe(false); // unique violation
    expect(isConnectionFailure(refused("42501"))).toBe(false); // RLS / privilege
    expect(isConnectionFailure(new Error("Connection terminated unexpectedly"))).toBe(true);
    expect(isConnectionFailure(new Error("something else"))).toBe(false);
  });
});
