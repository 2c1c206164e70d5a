/** Structured log sink of a node; the CLI prints it, tests may collect it. */
export interface Logger {
  info: (msg: string, fields?: Record<string, unknown>) => void
  warn: (msg: string, fields?: Record<string, unknown>) => void
  error: (msg: string, fields?: Record<string, unknown>) => void
}

/** A logger that drops everything. */
export const silentLogger: Logger = { info () {}, warn () {}, error () {} }

/** A logger writing one JSON object per line to a stream (stderr by default). */
export function jsonLogger (name: string, out: NodeJS.WritableStream = process.stderr): Logger {
  const write = (level: string) => (msg: string, fields: Record<string, unknown> = {}) => {
    out.write(JSON.stringify({ t: new Date().toISOString(), level, node: name, msg, ...fields }) + '\n')
  }
  return { info: write('info'), warn: write('warn'), error: write('error') }
}
