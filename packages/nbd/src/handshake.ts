import type { Socket } from 'node:net'
import { MAX_OPTION_BYTES } from './constants.js'
import { NbdProtocolError, NbdUnknownExportError } from './errors.js'
import { viewExport } from './export.js'
import type { ExportView, NbdExport } from './export.js'
import {
  EXPORT_NAME_PADDING, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT,
  INFO_BLOCK_SIZE, INFO_DESCRIPTION, INFO_EXPORT, INFO_NAME, MAX_STRING_BYTES, NBD_MAGIC, OPTION_REPLY_MAGIC, OPT_ABORT,
  OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, REP_ACK, REP_ERR_INVALID, REP_ERR_POLICY, REP_ERR_TOO_BIG,
  REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER
} from './protocol.js'
import type { SocketReader } from './socket-reader.js'

/** What the handshake needs from the server. */
export interface HandshakeContext {
  lookup: (name: string) => NbdExport | undefined | Promise<NbdExport | undefined>
  list?: () => Iterable<string> | Promise<Iterable<string>>
  maxPayload: number
  report: (err: Error) => void
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** Decodes a name; undefined if it is not UTF-8. */
function decodeName (bytes: Buffer): string | undefined {
  try { return utf8.decode(bytes) } catch { return undefined }
}

/**
 * Fixed newstyle option haggling on a fresh connection. Resolves to the export the client
 * entered transmission with (`NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`), or undefined when the
 * client aborted or asked `NBD_OPT_EXPORT_NAME` for an unknown export (the connection must then
 * be closed). Throws {@link NbdProtocolError} when the client breaks the protocol.
 */
export async function negotiate (socket: Socket, reader: SocketReader, ctx: HandshakeContext): Promise<ExportView | undefined> {
  const greeting = Buffer.alloc(18)
  greeting.writeBigUInt64BE(NBD_MAGIC, 0)
  greeting.writeBigUInt64BE(IHAVEOPT, 8)
  greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16)
  socket.write(greeting)

  const clientFlags = (await reader.read(4)).readUInt32BE(0)
  if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
    throw new NbdProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`)
  }
  const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0

  for (;;) {
    const header = await reader.read(16)
    const magic = header.readBigUInt64BE(0)
    if (magic !== IHAVEOPT) throw new NbdProtocolError(`bad option magic 0x${magic.toString(16)}`)
    const option = header.readUInt32BE(8)
    const length = header.readUInt32BE(12)
    if (length > MAX_OPTION_BYTES) throw new NbdProtocolError(`option ${option} carries ${length} bytes, more than ${MAX_OPTION_BYTES}`)
    const data = await reader.read(length)
    const reply = (type: number, payload?: Buffer | string): void => { replyOption(socket, option, type, payload) }

    switch (option) {
      case OPT_EXPORT_NAME: {
        const name = decodeName(data)
        const view = name === undefined ? undefined : await find(ctx, name)
        // This option has no error reply: the spec has the server hang up.
        if (view === undefined) return undefined
        const out = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PADDING))
        out.writeBigUInt64BE(BigInt(view.size), 0)
        out.writeUInt16BE(view.flags, 8)
        socket.write(out)
        return view
      }
      case OPT_ABORT:
        reply(REP_ACK)
        return undefined
      case OPT_LIST: {
        if (length !== 0) { reply(REP_ERR_INVALID, 'NBD_OPT_LIST takes no data'); break }
        if (ctx.list === undefined) { reply(REP_ERR_POLICY, 'this server does not list its exports'); break }
        let names: Iterable<string>
        try {
          names = await ctx.list()
        } catch (err) {
          ctx.report(err instanceof Error ? err : new Error(String(err)))
          reply(REP_ERR_POLICY, 'listing exports failed')
          break
        }
        for (const name of names) {
          const bytes = Buffer.from(name)
          if (bytes.length > MAX_STRING_BYTES) continue
          const payload = Buffer.alloc(4 + bytes.length)
          payload.writeUInt32BE(bytes.length, 0)
          bytes.copy(payload, 4)
          reply(REP_SERVER, payload)
        }
        reply(REP_ACK)
        break
      }
      case OPT_INFO:
      case OPT_GO: {
        const req = parseInfoRequest(data)
        if (typeof req === 'string') { reply(req === 'too big' ? REP_ERR_TOO_BIG : REP_ERR_INVALID, req); break }
        const view = await find(ctx, req.name)
        if (view === undefined) { reply(REP_ERR_UNKNOWN, `unknown export ${JSON.stringify(req.name)}`); break }
        reply(REP_INFO, infoExport(view))
        for (const info of req.infos) {
          if (info === INFO_NAME) reply(REP_INFO, infoString(INFO_NAME, view.name))
          else if (info === INFO_DESCRIPTION && view.backend.description !== undefined) reply(REP_INFO, infoString(INFO_DESCRIPTION, view.backend.description))
          else if (info === INFO_BLOCK_SIZE) reply(REP_INFO, infoBlockSize(view, ctx.maxPayload))
        }
        reply(REP_ACK)
        if (option === OPT_GO) return view
        break
      }
      default:
        // STRUCTURED_REPLY, STARTTLS, meta contexts and anything newer: simple replies only.
        reply(REP_ERR_UNSUP, `option ${option} is not supported`)
    }
  }
}

/** Looks an export up and checks it; undefined (reported) when unknown, misconfigured or the lookup failed. */
async function find (ctx: HandshakeContext, name: string): Promise<ExportView | undefined> {
  try {
    const backend = await ctx.lookup(name)
    if (backend === undefined) {
      ctx.report(new NbdUnknownExportError(name))
      return undefined
    }
    return viewExport(name, backend, ctx.maxPayload)
  } catch (err) {
    ctx.report(err instanceof Error ? err : new Error(String(err)))
    return undefined
  }
}

/** Parses the data of `NBD_OPT_INFO`/`NBD_OPT_GO`, or returns why it is invalid. */
function parseInfoRequest (data: Buffer): { name: string, infos: number[] } | string {
  if (data.length < 6) return 'option data too short'
  const nameLength = data.readUInt32BE(0)
  if (nameLength > data.length - 6) return 'name length past the option data'
  if (nameLength > MAX_STRING_BYTES) return 'too big'
  const name = decodeName(data.subarray(4, 4 + nameLength))
  if (name === undefined) return 'export name is not UTF-8'
  const count = data.readUInt16BE(4 + nameLength)
  if (data.length !== 6 + nameLength + 2 * count) return 'information request count does not match the option length'
  const infos: number[] = []
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameLength + 2 * i))
  return { name, infos }
}

function infoExport (view: ExportView): Buffer {
  const b = Buffer.alloc(12)
  b.writeUInt16BE(INFO_EXPORT, 0)
  b.writeBigUInt64BE(BigInt(view.size), 2)
  b.writeUInt16BE(view.flags, 10)
  return b
}

function infoString (type: number, text: string): Buffer {
  const bytes = Buffer.from(text)
  const b = Buffer.alloc(2 + bytes.length)
  b.writeUInt16BE(type, 0)
  bytes.copy(b, 2)
  return b
}

function infoBlockSize (view: ExportView, maxPayload: number): Buffer {
  const b = Buffer.alloc(14)
  b.writeUInt16BE(INFO_BLOCK_SIZE, 0)
  b.writeUInt32BE(1, 2) // byte-granular: any offset and length works
  b.writeUInt32BE(view.preferredBlockSize, 6)
  b.writeUInt32BE(maxPayload, 10)
  return b
}

function replyOption (socket: Socket, option: number, type: number, payload?: Buffer | string): void {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload ?? Buffer.alloc(0)
  const header = Buffer.alloc(20)
  header.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0)
  header.writeUInt32BE(option, 8)
  header.writeUInt32BE(type, 12)
  header.writeUInt32BE(data.length, 16)
  socket.write(data.length > 0 ? Buffer.concat([header, data]) : header)
}
