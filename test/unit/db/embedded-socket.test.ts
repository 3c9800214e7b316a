import { describe, expect, it } from "vitest";
import { embeddedSocketDir } from "../../../daemon/db/embedded.js";

describe("the embedded PostgreSQL's socket directory", () => {
  it("sits next to the data directory, in a directory of its own", () => {
    expect(embeddedSocketDir("/var/lib/wardkeep/pg", 5433)).toBe("/var/lib/wardkeep/pg.sock");
  });

  it("is not used when the socket path would not fit in a socket address (TCP only then)", () => {
    const deep = `/srv/${"hospital-appliance-data/".repeat(5)}pg`;
    expect(embeddedSocketDir(deep, 5433)).toBeUndefined();
  });
});
