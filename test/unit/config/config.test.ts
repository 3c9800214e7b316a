import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import YAML from "yaml";
import { renderDefaultConfig } from "../../../daemon/config/document.js";
import { ConfigError, loadConfig } from "../../../daemon/config/load.js";
import { publicOrigin } from "../../../daemon/config/public-url.js";

function writeConfig(text: string): string {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "wk-config-")), "wardkeep.yaml");
  fs.writeFileSync(file, text);
  return file;
}

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const message = (err as Error).message;
    expect(message).not.toContain("\n");
    return message;
  }
  throw new Error("expected a ConfigError");
}

describe("configuration", () => {
  it("starts from documented defaults", () => {
    const config = loadConfig({ env: {} });
    expect(config.server.port).toBe(8443);
    expect(config.tls.minVersion).toBe("TLSv1.2");
    expect(config.keys.unseal).toBe("keyfile");
    expect(config.database.url).toBeUndefined();
  });

  it("layers the file under the environment", () => {
    const file = writeConfig("server:\n  port: 9443\n  publicHostname: wardkeep.hospital.example\ntls:\n  minVersion: TLSv1.3\n");
    const config = loadConfig({ env: { WARDKEEP_CONFIG: file, WARDKEEP_PORT: "10443", WARDKEEP_TLS_HOSTNAMES: "a.example, 10.0.0.5" } });
    expect(config.server.port).toBe(10443);
    expect(config.server.publicHostname).toBe("wardkeep.hospital.example");
    expect(config.tls.minVersion).toBe("TLSv1.3");
    expect(config.tls.hostnames).toEqual(["a.example", "10.0.0.5"]);
  });

  it("maps every setting to a WARDKEEP_ variable, booleans included", () => {
    const config = loadConfig({
      env: { WARDKEEP_DATABASE_MIGRATE_ON_START: "false", WARDKEEP_SERVER_PROXY_PROTOCOL: "true", WARDKEEP_SERVER_TRUSTED_PROXIES: "10.0.0.1,10.1.0.0/16" },
    });
    expect(config.database.migrateOnStart).toBe(false);
    expect(config.server.proxyProtocol).toBe(true);
    expect(config.server.trustedProxies).toEqual(["10.0.0.1", "10.1.0.0/16"]);
  });

  it("names the key, the value, the source and what is allowed for a bad number", () => {
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_PORT: "eighty" } }))).toBe('config: server.port = "eighty" (environment WARDKEEP_PORT) is invalid: expected a number');
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_PORT: "70000" } }))).toMatch(/server\.port = 70000 .*at most 65535/);
  });

  it("lists the allowed values of an enum", () => {
    const file = writeConfig("tls:\n  minVersion: TLSv1.1\n");
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_CONFIG: file } }))).toBe(
      `config: tls.minVersion = "TLSv1.1" (file ${file}) is invalid: expected one of "TLSv1.2", "TLSv1.3"`,
    );
  });

  it("rejects a misspelt key instead of ignoring it", () => {
    const file = writeConfig("server:\n  prot: 9443\n");
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_CONFIG: file } }))).toMatch(/server .*no key "prot"/);
  });

  it("refuses a replaced setting in one line naming its replacement, from the file or the environment", () => {
    const file = writeConfig("sso:\n  publicUrl: https://wardkeep.hospital.example\n");
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_CONFIG: file } }))).toBe(
      `config: sso.publicUrl (file ${file}) was replaced by server.publicUrl (the one public address for redirects, invite links and identity providers; docs/hardening.md)`,
    );
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_SSO_PUBLIC_URL: "https://wardkeep.hospital.example" } }))).toMatch(
      /^config: sso\.publicUrl \(environment WARDKEEP_SSO_PUBLIC_URL\) was replaced by server\.publicUrl/,
    );
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_CONFIG: writeConfig("server:\n  trustProxy: true\n") } }))).toMatch(
      /^config: server\.trustProxy \(file .*\) was replaced by server\.trustedProxies/,
    );
  });

  it("takes one public address, an https origin, for everything made from it", () => {
    expect(loadConfig({ env: { WARDKEEP_SERVER_PUBLIC_URL: "https://wardkeep.hospital.example/" } }).server.publicUrl).toBe("https://wardkeep.hospital.example");
    expect(publicOrigin(loadConfig({ env: { WARDKEEP_SERVER_PUBLIC_URL: "https://wardkeep.hospital.example" } }), 8443)).toBe("https://wardkeep.hospital.example");
    // Unset: the public host name and the port the listener got (443 not written).
    expect(publicOrigin(loadConfig({ env: { WARDKEEP_SERVER_PUBLIC_HOSTNAME: "wk.example" } }), 9443)).toBe("https://wk.example:9443");
    expect(publicOrigin(loadConfig({ env: { WARDKEEP_SERVER_PUBLIC_HOSTNAME: "wk.example" } }), 443)).toBe("https://wk.example");
    for (const bad of ["http://wardkeep.hospital.example", "https://wardkeep.hospital.example/wardkeep", "https://user:pw@wardkeep.hospital.example"]) {
      expect(errorOf(() => loadConfig({ env: { WARDKEEP_SERVER_PUBLIC_URL: bad } }))).toMatch(
        /^config: server\.publicUrl = .* is invalid: expected an https:\/\/ origin without path/,
      );
    }
  });

  it("requires a certificate and its key together", () => {
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_TLS_CERT_FILE: "/etc/wardkeep/cert.pem" } }))).toMatch(/tls\.keyFile .*both or neither/);
  });

  it("never echoes a database password", () => {
    const message = errorOf(() => loadConfig({ env: { WARDKEEP_DATABASE_URL: "mysql://admin:hunter2secret@db/x" } }));
    expect(message).not.toContain("hunter2secret");
    expect(message).toMatch(/database\.url .*postgres:\/\/ URL/);
  });

  it("reports unreadable and malformed files in one line", () => {
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_CONFIG: "/nonexistent/wardkeep.yaml" } }))).toBe("config: cannot read config file /nonexistent/wardkeep.yaml (ENOENT)");
    const bad = writeConfig("server:\n  port: [1,\n");
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_CONFIG: bad } }))).toMatch(/is not valid YAML/);
    const scalar = writeConfig("just a string\n");
    expect(errorOf(() => loadConfig({ env: { WARDKEEP_CONFIG: scalar } }))).toMatch(/must hold a mapping/);
  });

  it("keeps config/default.yaml equal to what the schema generates", () => {
    const committed = fs.readFileSync(new URL("../../../config/default.yaml", import.meta.url), "utf8");
    expect(committed).toBe(renderDefaultConfig());
  });

  it("documents defaults that load back to the same configuration", () => {
    const file = writeConfig(renderDefaultConfig());
    expect(loadConfig({ env: { WARDKEEP_CONFIG: file } })).toEqual(loadConfig({ env: {} }));
    expect(YAML.parse(renderDefaultConfig()).server.port).toBe(8443);
  });
});
