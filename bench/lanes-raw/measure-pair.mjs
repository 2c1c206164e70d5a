// The measuring step shared by raw-lanes.mjs and worker-lanes.mjs: a receiver and a sender child
// (already spawned, speaking the same small IPC protocol) are connected, started together, and
// timed until the receiver has everything; CPU seconds come from each child's own report.
const GIB = 1024 ** 3

/** Runs one transfer; returns MB/s and CPU-s per GiB for each side. */
export async function measurePair (recv, send, connectMsg) {
  const hello = await recv.next()
  send.send({ ...connectMsg(hello) })
  await send.next() // connected, lanes open
  recv.send('go'); send.send('go')
  const t0 = process.hrtime.bigint()
  const r = await recv.next()
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  send.send('report')
  const s = await send.next()
  recv.send('exit'); send.send('exit')
  await Promise.all([recv.exited, send.exited])
  const gib = r.bytes / GIB
  return { mbps: r.bytes / seconds / 1e6, sendCpu: s.cpu / gib, recvCpu: r.cpu / gib, seconds }
}
