import { pino } from 'pino'
import type { Logger as PinoLogger } from 'pino'
import pretty from 'pino-pretty'

/**
 * Structured log sink of a node: a message and fields. The daemon's is pino ({@link pinoLogger});
 * tests may collect lines with their own. `child` adds fields to every line (a migration's id).
 */
export interface Logger {
  debug?: (msg: string, fields?: Record<string, unknown>) => void
  info: (msg: string, fields?: Record<string, unknown>) => void
  warn: (msg: string, fields?: Record<string, unknown>) => void
  error: (msg: string, fields?: Record<string, unknown>) => void
  child?: (fields: Record<string, unknown>) => Logger
}

/** A logger that drops everything. */
export const silentLogger: Logger = { info () {}, warn () {}, error () {} }

/** `log` with `fields` on every line (or `log` itself when it cannot make children). */
export function childLogger (log: Logger, fields: Record<string, unknown>): Logger {
  return log.child?.(fields) ?? log
}

/** Options of {@link pinoLogger}. */
export interface PinoLoggerOptions {
  /** `json` (one object per line) or `pretty` (readable); default: pretty on a TTY, else json. */
  format?: 'json' | 'pretty'
  level?: 'debug' | 'info' | 'warn' | 'error'
  /** Where lines go; default stderr. */
  out?: NodeJS.WritableStream & { isTTY?: boolean }
}

/**
 * The node's log: pino, JSON lines by default (`{"level":"info","time":...,"node":"shoal","msg":...}`),
 * readable lines (pino-pretty, in this process: no worker thread) when asked or on a terminal.
 */
export function pinoLogger (name: string, opts: PinoLoggerOptions = {}): Logger {
  const out = opts.out ?? process.stderr
  const format = opts.format ?? (out.isTTY === true ? 'pretty' : 'json')
  // Levels as words ("info"), as the node's lines have always had them.
  const base = { level: opts.level ?? 'info', base: { node: name }, formatters: { level: (label: string) => ({ level: label }) } }
  const p = format === 'pretty'
    ? pino(base, pretty({ destination: out as NodeJS.WritableStream as never, colorize: out.isTTY === true, sync: true }))
    : pino(base, out as never)
  return wrap(p)
}

/** Kept for callers of the earlier JSON logger: pino with JSON lines. */
export function jsonLogger (name: string, out: NodeJS.WritableStream = process.stderr): Logger {
  return pinoLogger(name, { format: 'json', out })
}

function wrap (p: PinoLogger): Logger {
  return {
    debug: (msg, fields) => { p.debug(fields ?? {}, msg) },
    info: (msg, fields) => { p.info(fields ?? {}, msg) },
    warn: (msg, fields) => { p.warn(fields ?? {}, msg) },
    error: (msg, fields) => { p.error(fields ?? {}, msg) },
    child: (fields) => wrap(p.child(fields))
  }
}
