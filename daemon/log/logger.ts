// winston logger that writes one JSON object per line and cannot emit PHI: every entry passes
// through redactValue/scrubText before it is serialised (DESIGN.md, "Logs").
import { Writable } from "node:stream";
import winston from "winston";
import { redactValue, scrubText } from "./redact.js";

// triple-beam's symbols, which winston and logform key their internal fields on.
const LEVEL = Symbol.for("level");
const MESSAGE = Symbol.for("message");
const SPLAT = Symbol.for("splat");

export type Logger = winston.Logger;
type Info = winston.Logform.TransformableInfo;

export interface LoggerOptions {
  level: string;
  /** Where JSON lines go; process.stdout when omitted (containers and systemd collect it). */
  stream?: NodeJS.WritableStream;
  service?: string;
  /** Keep scrubbed Error stacks. Off by default: a stack repeats the message and adds nothing for operators. */
  includeStack?: boolean;
}

const LEVELS = winston.config.npm.levels;

export function createLogger(opts: LoggerOptions): Logger {
  if (!Object.hasOwn(LEVELS, opts.level)) {
    throw new Error(`Unknown log level "${opts.level}"; expected one of ${Object.keys(LEVELS).join(", ")}`);
  }
  const includeStack = opts.includeStack ?? false;
  let defaultMeta: () => Record<string, unknown> = () => ({});
  const logger = winston.createLogger({
    level: opts.level,
    levels: LEVELS,
    defaultMeta: opts.service ? { service: opts.service } : undefined,
    format: phiSafeJsonFormat({
      includeStack,
      defaultMeta: () => defaultMeta(),
    }),
    transports: [
      new winston.transports.Stream({
        stream: opts.stream ?? process.stdout,
        eol: "\n",
      }),
    ],
    exitOnError: false,
  });
  defaultMeta = () => (logger.defaultMeta as Record<string, unknown> | undefined) ?? {};
  logger.child = childKeepingErrors;
  return logger;
}

/** A logger that writes nowhere: for tests and for CLI commands whose stdout is JSON output. */
export function silentLogger(): Logger {
  return winston.createLogger({
    level: "error",
    levels: LEVELS,
    silent: true,
    transports: [
      new winston.transports.Stream({
        stream: new Writable({
          write(_chunk, _encoding, callback) {
            callback();
          },
        }),
      }),
    ],
  });
}

export interface PhiSafeFormatOptions {
  includeStack: boolean;
  /** The logger's default metadata, re-attached when winston hands over a bare Error. */
  defaultMeta: () => Record<string, unknown>;
}

export function phiSafeJsonFormat(opts: PhiSafeFormatOptions): winston.Logform.Format {
  return winston.format.combine(
    liftErrors(opts),
    // Interpolation runs on arguments already redacted by liftErrors, so "%o" cannot print PHI.
    winston.format.splat(),
    redactInfo(opts),
    winston.format.timestamp(),
    jsonLine(),
  );
}

const FORMAT_TOKEN_RE = /%[scdjifoO%]/g;

/**
 * winston spreads an Error's own fields (pg's `detail`, sequelize's `sql`) and its stack into the
 * entry, and `logger.error(err)` hands the Error itself over as the entry. Both are reshaped to
 * `{ message, error: Error }` so that redactInfo reduces the error as one unit to
 * `{ name, message, code }`.
 */
function liftErrors(opts: PhiSafeFormatOptions): winston.Logform.Format {
  return winston.format((info: Info) => {
    const entry: Info = info instanceof Error ? errorEntry(info, opts.defaultMeta()) : info;
    const splat = entry[SPLAT];
    if (!Array.isArray(splat) || splat.length === 0) return entry;

    const message = typeof entry.message === "string" ? entry.message : "";
    const tokens = message.match(FORMAT_TOKEN_RE) ?? [];
    const escapes = message.match(/%%/g)?.length ?? 0;
    // Mirrors logform's splat: the first `consumed` arguments are interpolated into the message,
    // the rest are merged into the entry as metadata.
    const consumed = Math.max(0, tokens.length - escapes);
    if (tokens.length === 0 && splat[0] instanceof Error) {
      unspreadError(entry, splat[0], opts.defaultMeta());
    }

    const interpolated = splat.slice(0, consumed).map((arg: unknown) => redactValue(arg, { includeStack: opts.includeStack }));
    // Only objects are metadata; merging a string would spread its characters into the entry.
    const merged = splat
      .slice(consumed)
      .filter((arg: unknown) => typeof arg === "object" && arg !== null)
      .map((arg: unknown) => (arg instanceof Error ? { error: arg } : arg));
    entry[SPLAT] = [...interpolated, ...merged];
    return entry;
  })();
}

function errorEntry(err: Error, defaultMeta: Record<string, unknown>): Info {
  const fields = err as unknown as Record<string | symbol, unknown>;
  const entry: Info = {
    ...defaultMeta,
    level: String(fields.level),
    message: err.message,
    error: err,
  };
  entry[LEVEL] = fields[LEVEL];
  entry[SPLAT] = fields[SPLAT];
  return entry;
}

/**
 * winston's child loggers copy an Error entry's own fields and stack into a plain object before
 * the format sees it, which would put `detail` and `code` at the top level and lose the error's
 * name. This child keeps the Error whole so liftErrors/redactInfo treat it like the root does.
 */
function childKeepingErrors(this: Logger, childMeta: Record<string, unknown>): Logger {
  const parent = this;
  return Object.create(parent, {
    write: {
      value(info: Info) {
        const entry = info instanceof Error ? errorEntry(info, (parent.defaultMeta as Record<string, unknown> | undefined) ?? {}) : info;
        return parent.write(Object.assign({}, childMeta, entry));
      },
    },
  }) as Logger;
}

function unspreadError(entry: Info, err: Error, defaultMeta: Record<string, unknown>): void {
  const fields = err as unknown as Record<string, unknown>;
  for (const key of Object.keys(err)) {
    // winston's single-argument path writes `level` and the default metadata onto the Error
    // itself, so an Error logged twice carries them as own fields.
    if (key === "level" || key === "message" || Object.hasOwn(defaultMeta, key)) continue;
    if (entry[key] === fields[key]) delete entry[key];
  }
  if (entry.stack === err.stack) delete entry.stack;
  if (err.cause !== undefined && entry.cause === err.cause) delete entry.cause;
  // winston appends the error message to the log message; it is kept under `error.message`.
  const appended = ` ${err.message}`;
  if (err.message && typeof entry.message === "string" && entry.message.endsWith(appended)) {
    entry.message = entry.message.slice(0, -appended.length);
  }
}

function redactInfo(opts: PhiSafeFormatOptions): winston.Logform.Format {
  return winston.format((info: Info) => {
    const rest: Record<string, unknown> = {};
    for (const key of Object.keys(info)) {
      if (key === "level" || key === "message") continue;
      // A top-level stack comes from a child logger flattening an Error.
      if (key === "stack" && !opts.includeStack) continue;
      rest[key] = info[key];
    }
    const redacted = redactValue(rest, { includeStack: opts.includeStack });
    const entry: Info = {
      ...(typeof redacted === "object" && redacted !== null ? redacted : {}),
      level: info.level,
      message: typeof info.message === "string" ? scrubText(info.message) : redactValue(info.message, { includeStack: opts.includeStack }),
    };
    // Raw splat arguments are not carried past this point.
    entry[LEVEL] = info[LEVEL];
    return entry;
  })();
}

function jsonLine(): winston.Logform.Format {
  return winston.format((info: Info) => {
    const { timestamp, level, message, ...meta } = info;
    try {
      info[MESSAGE] = JSON.stringify({ timestamp, level, message, ...meta });
    } catch {
      // Unreachable for redacted data (plain JSON values), but a log call must never throw.
      info[MESSAGE] = JSON.stringify({
        timestamp,
        level,
        message: "[unserializable log entry]",
      });
    }
    return info;
  })();
}
