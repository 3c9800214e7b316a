import { SMTPServer } from "smtp-server";

/**
 * A hospital's SMTP relay as the tests need one: STARTTLS on a plain port, AUTH only after TLS,
 * one account. Every accepted message is kept with whether it arrived over TLS and who sent it.
 */
export type RelayedMail = { from: string; to: string[]; subject: string; text: string; secure: boolean; user: string | undefined };

export type SmtpRelay = { port: number; mails: RelayedMail[]; authFailures: number; close(): Promise<void> };

export async function startSmtpRelay(opts: { certPem: string; keyPem: string; user: string; password: string; port: number }): Promise<SmtpRelay> {
  const mails: RelayedMail[] = [];
  const relay = { port: opts.port, mails, authFailures: 0, close: async () => {} };
  const server = new SMTPServer({
    key: opts.keyPem,
    cert: opts.certPem,
    secure: false,
    authMethods: ["PLAIN", "LOGIN"],
    allowInsecureAuth: false,
    logger: false,
    onAuth(auth, _session, cb) {
      if (auth.username === opts.user && auth.password === opts.password) return cb(null, { user: auth.username });
      relay.authFailures += 1;
      return cb(new Error("Invalid username or password"));
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const { subject, text } = parseMessage(Buffer.concat(chunks).toString("utf8"));
        mails.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          subject,
          text,
          secure: session.secure,
          user: session.user as string | undefined,
        });
        cb();
      });
    },
  });
  server.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, "127.0.0.1", () => resolve());
  });
  relay.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return relay;
}

/** Subject and plain-text body of a single-part message (7bit or quoted-printable, as nodemailer writes it). */
function parseMessage(raw: string): { subject: string; text: string } {
  const split = raw.indexOf("\r\n\r\n");
  const head = raw.slice(0, split).replace(/\r\n[ \t]+/g, " ");
  let body = raw.slice(split + 4);
  const header = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "im").exec(head)?.[1]?.trim() ?? "";
  if (/quoted-printable/i.test(header("Content-Transfer-Encoding"))) {
    body = Buffer.from(
      body.replace(/=\r\n/g, "").replace(/=([0-9A-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))),
      "latin1",
    ).toString("utf8");
  }
  return { subject: header("Subject"), text: body.replace(/\r\n/g, "\n").trimEnd() };
}
