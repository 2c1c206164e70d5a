/** Defaults of the NBD server, in one place. */

/** Requests one connection may have in flight (read from the socket, not yet answered). */
export const DEFAULT_MAX_IN_FLIGHT = 64
/**
 * Bytes of READ and WRITE payloads one connection may have in flight; a request that would go
 * past it waits (the first one always goes), so one client holds at most this much memory.
 */
export const DEFAULT_MAX_IN_FLIGHT_BYTES = 128 * 1024 * 1024
/**
 * Largest READ or WRITE payload (the spec's 2^25, which every client must accept and QEMU uses).
 * A longer READ gets `EINVAL`; a longer WRITE is a protocol violation and closes the connection.
 */
export const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024
/** Preferred block size advertised when an export names none (the spec's default, 4 KiB). */
export const DEFAULT_PREFERRED_BLOCK_SIZE = 4096
/** Longest option the server reads during the handshake; a longer one closes the connection. */
export const MAX_OPTION_BYTES = 64 * 1024
/** Longest unix socket path (sun_path is 108 bytes with its NUL). */
export const MAX_SOCKET_PATH = 107
