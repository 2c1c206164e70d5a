/** `1.2.3.4:5` or `[::1]:5` → host and port (the form data endpoints travel in, see ACCEPT). */
export function parseEndpoint (e: string): { host: string, port: number } {
  const at = e.lastIndexOf(':')
  const host = e.slice(0, at).replace(/^\[(.*)\]$/, '$1')
  return { host, port: Number(e.slice(at + 1)) }
}

/** `host:port` as an endpoint string (IPv6 in brackets). */
export function formatEndpoint (host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}
