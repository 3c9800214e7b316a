import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { freePort } from "./postgres.js";

/**
 * Debian's slapd as a test peer: started as the current user on free loopback ports with a
 * temporary configuration, a test CA and server certificate (StartTLS on `ldap://`, and
 * `ldaps://`), and the entries of `ldif` loaded with slapadd. Active Directory's attributes that
 * sign-in reads (sAMAccountName, userAccountControl, objectGUID) come from a small schema so the
 * AD code path runs against it too; OpenLDAP's ppolicy module provides pwdAccountLockedTime.
 */
export type Slapd = {
  /** `ldap://127.0.0.1:PORT` (StartTLS, or plain for the refusal tests). */
  ldapUrl: string;
  /** `ldaps://127.0.0.1:PORT`. */
  ldapsUrl: string;
  /** PEM of the test CA that issued the server certificate. */
  caPem: string;
  /** Another CA's PEM, which does not vouch for the server. */
  otherCaPem: string;
  suffix: string;
  /** Runs ldapmodify as the directory manager (for changes during a test). */
  modify(ldif: string): void;
  stop(): Promise<void>;
};

const AD_SCHEMA = `
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.2 NAME 'objectGUID'
  EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.1.1 NAME 'wardkeepTestAdUser' AUXILIARY
  MAY ( sAMAccountName $ userAccountControl $ objectGUID ) )
`;

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
}

function makeCa(dir: string, name: string): void {
  openssl(dir, [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.crt`,
  ]);
}

function makeServerCert(dir: string): void {
  fs.writeFileSync(path.join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  openssl(dir, ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"]);
  openssl(dir, ["x509", "-req", "-in", "server.csr", "-CA", "test-ca.crt", "-CAkey", "test-ca.key", "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt"]);
}

async function waitForPort(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`slapd exited (${child.exitCode}): ${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`slapd did not listen on ${port}: ${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startSlapd(dir: string, opts: { suffix: string; rootPassword: string; ldif: string }): Promise<Slapd> {
  fs.mkdirSync(path.join(dir, "db"), { recursive: true });
  makeCa(dir, "test-ca");
  makeCa(dir, "other-ca");
  makeServerCert(dir);
  fs.writeFileSync(path.join(dir, "ad.schema"), AD_SCHEMA);
  const conf = path.join(dir, "slapd.conf");
  fs.writeFileSync(
    conf,
    [
      "include /etc/ldap/schema/core.schema",
      "include /etc/ldap/schema/cosine.schema",
      "include /etc/ldap/schema/inetorgperson.schema",
      "include /etc/ldap/schema/nis.schema",
      `include ${dir}/ad.schema`,
      "modulepath /usr/lib/ldap",
      "moduleload back_mdb",
      "moduleload ppolicy",
      `pidfile ${dir}/slapd.pid`,
      `argsfile ${dir}/slapd.args`,
      `TLSCACertificateFile ${dir}/test-ca.crt`,
      `TLSCertificateFile ${dir}/server.crt`,
      `TLSCertificateKeyFile ${dir}/server.key`,
      "database mdb",
      `suffix "${opts.suffix}"`,
      `rootdn "cn=admin,${opts.suffix}"`,
      `rootpw ${opts.rootPassword}`,
      `directory ${dir}/db`,
      "maxsize 16777216",
      // Passwords are only for binding; everything else is readable by bound accounts, not anonymously.
      "access to attrs=userPassword by anonymous auth by self auth by * none",
      "access to * by users read by * none",
      "",
    ].join("\n"),
  );
  fs.writeFileSync(path.join(dir, "seed.ldif"), opts.ldif);
  execFileSync("slapadd", ["-f", conf, "-l", path.join(dir, "seed.ldif")], { stdio: "pipe" });
  const [ldapPort, ldapsPort] = [await freePort(), await freePort()];
  let output = "";
  const child = spawn("slapd", ["-d", "0", "-f", conf, "-h", `ldap://127.0.0.1:${ldapPort}/ ldaps://127.0.0.1:${ldapsPort}/`], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  await waitForPort(ldapPort, child, () => output);
  await waitForPort(ldapsPort, child, () => output);
  const ldapUrl = `ldap://127.0.0.1:${ldapPort}`;
  return {
    ldapUrl,
    ldapsUrl: `ldaps://127.0.0.1:${ldapsPort}`,
    caPem: fs.readFileSync(path.join(dir, "test-ca.crt"), "utf8"),
    otherCaPem: fs.readFileSync(path.join(dir, "other-ca.crt"), "utf8"),
    suffix: opts.suffix,
    modify(ldif) {
      execFileSync("ldapmodify", ["-x", "-H", ldapUrl, "-D", `cn=admin,${opts.suffix}`, "-w", opts.rootPassword], { input: ldif, stdio: ["pipe", "pipe", "pipe"] });
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}
