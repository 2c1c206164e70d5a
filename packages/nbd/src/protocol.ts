/**
 * Numbers of the NBD protocol (doc/proto.md of the NetworkBlockDevice/nbd repository): magics,
 * option and reply types, flags, commands and error values. Internal: the package's users see
 * only exports, errors and the server.
 */

/** `NBDMAGIC`, first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n
/** `IHAVEOPT`: newstyle negotiation, and the prefix of every option the client sends. */
export const IHAVEOPT = 0x49484156454f5054n
/** Magic of every option reply (fixed newstyle). */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n
/** Magic of a transmission request. */
export const REQUEST_MAGIC = 0x25609513
/** Magic of a simple reply. */
export const SIMPLE_REPLY_MAGIC = 0x67446698

/** Handshake flag: the server speaks fixed newstyle. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0
/** Handshake flag: the server can skip the 124 zero bytes after `NBD_OPT_EXPORT_NAME`. */
export const FLAG_NO_ZEROES = 1 << 1

/** Client flag: the client speaks fixed newstyle. */
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0
/** Client flag: the client wants no zero padding after `NBD_OPT_EXPORT_NAME`. */
export const FLAG_C_NO_ZEROES = 1 << 1

/** Option: choose an export and enter transmission (no error reply possible). */
export const OPT_EXPORT_NAME = 1
/** Option: the client gives up the handshake. */
export const OPT_ABORT = 2
/** Option: list the exports. */
export const OPT_LIST = 3
/** Option: describe an export. */
export const OPT_INFO = 6
/** Option: describe an export and enter transmission with it. */
export const OPT_GO = 7

/** Option reply: done. */
export const REP_ACK = 1
/** Option reply: one export of a list. */
export const REP_SERVER = 2
/** Option reply: one piece of information about an export. */
export const REP_INFO = 3
/** Option reply: option not supported. */
export const REP_ERR_UNSUP = 0x80000001
/** Option reply: refused by policy. */
export const REP_ERR_POLICY = 0x80000002
/** Option reply: malformed option. */
export const REP_ERR_INVALID = 0x80000003
/** Option reply: no such export. */
export const REP_ERR_UNKNOWN = 0x80000006
/** Option reply: request too large. */
export const REP_ERR_TOO_BIG = 0x80000009

/** Information: size and transmission flags. */
export const INFO_EXPORT = 0
/** Information: canonical name. */
export const INFO_NAME = 1
/** Information: description for humans. */
export const INFO_DESCRIPTION = 2
/** Information: minimum, preferred and maximum block sizes. */
export const INFO_BLOCK_SIZE = 3

/** Transmission flag: always set. */
export const TFLAG_HAS_FLAGS = 1 << 0
/** Transmission flag: the export is read-only. */
export const TFLAG_READ_ONLY = 1 << 1
/** Transmission flag: `NBD_CMD_FLUSH` is supported. */
export const TFLAG_SEND_FLUSH = 1 << 2
/** Transmission flag: `NBD_CMD_FLAG_FUA` is supported. */
export const TFLAG_SEND_FUA = 1 << 3
/** Transmission flag: `NBD_CMD_TRIM` is supported. */
export const TFLAG_SEND_TRIM = 1 << 5
/** Transmission flag: `NBD_CMD_WRITE_ZEROES` is supported. */
export const TFLAG_SEND_WRITE_ZEROES = 1 << 6
/** Transmission flag: a flush on one connection covers every connection. */
export const TFLAG_CAN_MULTI_CONN = 1 << 8

/** Command flag: reply only once the command's writes are durable. */
export const CMD_FLAG_FUA = 1 << 0
/** Command flag of `WRITE_ZEROES`: leave the range allocated. */
export const CMD_FLAG_NO_HOLE = 1 << 1

/** Command: read. */
export const CMD_READ = 0
/** Command: write (payload follows the header). */
export const CMD_WRITE = 1
/** Command: disconnect after answering what is in flight. */
export const CMD_DISC = 2
/** Command: make completed writes durable. */
export const CMD_FLUSH = 3
/** Command: discard a range. */
export const CMD_TRIM = 4
/** Command: zero a range. */
export const CMD_WRITE_ZEROES = 6

/** Error value: operation not permitted. */
export const NBD_EPERM = 1
/** Error value: input/output error. */
export const NBD_EIO = 5
/** Error value: invalid argument. */
export const NBD_EINVAL = 22
/** Error value: no space left. */
export const NBD_ENOSPC = 28
/** Error value: the server is shutting down. */
export const NBD_ESHUTDOWN = 108

/** Bytes of a transmission request header. */
export const REQUEST_HEADER_BYTES = 28
/** Bytes of a simple reply header. */
export const SIMPLE_REPLY_BYTES = 16
/** Zero bytes that follow the `NBD_OPT_EXPORT_NAME` reply unless the client chose `NO_ZEROES`. */
export const EXPORT_NAME_PADDING = 124
/** Longest string (export name, description) the spec allows. */
export const MAX_STRING_BYTES = 4096

/** A command's name, for errors and reports. */
export function commandName (type: number): string {
  switch (type) {
    case CMD_READ: return 'READ'
    case CMD_WRITE: return 'WRITE'
    case CMD_DISC: return 'DISC'
    case CMD_FLUSH: return 'FLUSH'
    case CMD_TRIM: return 'TRIM'
    case CMD_WRITE_ZEROES: return 'WRITE_ZEROES'
    default: return `command ${type}`
  }
}
