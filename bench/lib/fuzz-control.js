// Control-API inputs for `pnpm bench fuzz`: HTTP over the node's unix socket with random paths,
// methods and JSON bodies of wrong types and absurd values, plus malformed HTTP.
//
// Kept out on purpose (they would hurt this shared machine, not find bugs): `fill: "random"` on
// large images (writes the whole size to tmpfs), starting images larger than a few MiB, QEMU
// configs naming a readable kernel (would boot a VM), volumes imported from endless files
// (/dev/zero), and migrations or pulls towards anything but loopback.
import { request } from 'node:http'
import { connect } from 'node:net'

const GiB = 2 ** 30
const absurdNumbers = [-1, 0, 0.5, 1e308, -1e308, 2 ** 53, 2 ** 53 + 2, 2 ** 64, 512 * GiB, 2 ** 40, NaN, 'Infinity', '4096', true, null, [], {}, '', '1e3']
const strings = ['', '.', '..', '../etc', 'a/b', '%2e%2e', 'x'.repeat(200), 'ü', '\u0000', 'fz-none', 'fuzzvol', '<script>', '{"a":1}']

/** One control-API request description from the generator. */
export function controlRequest (rng, state) {
  const wild = () => rng.pick([...absurdNumbers, ...strings])
  const smallName = () => rng.chance(0.7) && state.small.length > 0 ? rng.pick(state.small) : rng.pick(strings)
  const anyName = () => rng.chance(0.5) ? smallName() : rng.chance(0.5) && state.absurd.length > 0 ? rng.pick(state.absurd) : `fz-${rng.u32()}`
  // Raw branch: slashes and broken escapes kept, but never characters an HTTP request line cannot carry.
  const enc = (s) => rng.chance(0.8) ? encodeURIComponent(String(s)) : String(s).replace(/[^\x21-\x7e]/g, c => encodeURIComponent(c)).replace(/\//g, '%2F') + rng.pick(['', '%', '%ZZ', '%E0%A4%A'])
  const loopbackTo = () => rng.pick(['', 'garbage', '/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWNvSZnPi3RrhrTwEY4LuuBeB6K6facKUCJcyWG1aoDd2p', '12D3KooWNvSZnPi3RrhrTwEY4LuuBeB6K6facKUCJcyWG1aoDd2p', 'z' + 'x'.repeat(60), state.selfPeerId, 42, null])
  const route = rng.weighted([[2, 'status'], [4, 'create'], [2, 'start'], [2, 'delete'], [2, 'allow'], [1, 'volume'], [1, 'pull'], [1, 'delvol'], [2, 'hot'], [2, 'migrate'], [3, 'random']])
  let method = 'POST'; let path = '/'; let body
  switch (route) {
    case 'status': method = rng.pick(['GET', 'GET', 'POST', 'HEAD']); path = rng.pick(['/status', '/status/', '/status?x=1', '//status']); break
    case 'create': {
      path = '/images'
      const small = rng.chance(0.5)
      const name = small ? `fz-s-${rng.u32()}` : rng.chance(0.3) ? rng.pick(strings) : `fz-a-${rng.u32()}`
      const b = {
        name,
        memorySize: small ? rng.pick([4096, 65536, 1 << 20, 4 << 20]) : rng.pick([...absurdNumbers, 512 * GiB, 4096 * 2 ** 32]),
        cacheSize: small ? rng.pick([0, 0, 1 << 20]) : rng.pick([...absurdNumbers, 2 ** 40]),
        pageSize: small ? rng.pick([undefined, 4096]) : rng.pick([...absurdNumbers, 3, 2 ** 21]),
        blockSize: small ? rng.pick([undefined, 65536]) : rng.pick([...absurdNumbers, 8 << 20]),
        driver: rng.pick([undefined, 'synthetic', 'qemu', 'nope', 5]),
        fill: small ? rng.pick([undefined, 'zero', 'random', 'bogus']) : rng.pick([undefined, 'zero', 7, 'bogus']),
        tracker: rng.pick([undefined, 'scan', 'cooperative', 'bogus', 3]),
        cacheVolume: rng.pick([undefined, undefined, 'fuzzvol', 'nope', 5]),
        config: rng.pick([undefined, {}, { rate: 0, recordRate: 0 }, { rate: wild() }, 'str', [1], { kernel: '/nonexistent/vmlinuz', memorySize: wild() }])
      }
      if (b.driver === 'qemu' && b.config != null && typeof b.config === 'object' && 'kernel' in b.config === false) b.config = { kernel: '/nonexistent/vmlinuz' }
      body = rng.chance(0.9) ? b : rng.pick([[b], 'null', '"x"', '{"name":'])
      ;(small ? state.small : state.absurd).push(name)
      if (state.small.length > 64) state.small.shift()
      if (state.absurd.length > 64) state.absurd.shift()
      break
    }
    case 'start': path = `/images/${enc(smallName())}/start`; break
    case 'delete': method = 'DELETE'; path = `/images/${enc(anyName())}`; break
    case 'allow': path = '/allow'; body = { peerId: rng.pick([wild(), '12D3KooWNvSZnPi3RrhrTwEY4LuuBeB6K6facKUCJcyWG1aoDd2p', 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N', 'x'.repeat(100)]) }; break
    case 'volume': path = '/volumes'; body = { id: rng.pick([...strings, `fz-v-${rng.u32()}`]), path: rng.pick([state.volumeFile, '/nonexistent', '/etc/hostname', '/dev/null', '/tmp', wild()]), blockSize: rng.pick([undefined, 4096, ...absurdNumbers]) }; break
    case 'pull': path = '/volumes/pull'; body = { id: rng.pick([...strings, 'fuzzvol']), from: rng.pick([undefined, [loopbackTo()], 'str', [1, 2], []]) }; break
    case 'delvol': method = 'DELETE'; path = `/volumes/${enc(rng.pick(strings))}`; break
    case 'hot': path = `/images/${enc(anyName())}/hot`; body = { from: wild(), to: wild() }; break
    case 'migrate': {
      path = '/migrate'
      body = { image: rng.chance(0.7) ? anyName() : wild(), to: loopbackTo() }
      for (const k of ['lanes', 'maxRounds', 'downtimeTargetMs', 'chunkBytes', 'streamsPerConnection', 'maxRate', 'laneRate', 'scanCpuShare', 'autoConverge', 'adaptivePacing']) if (rng.chance(0.3)) body[k] = wild()
      break
    }
    case 'random': {
      method = rng.pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'])
      path = rng.pick(['/', '/images/', '/images/a/b/c', '/volumes/pull/x', `/${'a'.repeat(rng.pick([10, 4000]))}`, '/images/%/start', '/images/%E0%A4%A/start', `/${enc(wild())}`, '/migrate?x=%zz', '/../../etc/passwd'])
      body = rng.chance(0.5) ? wild() : rng.pick([undefined, 'not json', '[]', '{"a":' + '['.repeat(5000), 'x'.repeat(70 * 1024)])
      break
    }
  }
  const text = body === undefined ? '' : typeof body === 'string' && !route.startsWith('create') ? body : JSON.stringify(body)
  return { route, method, path, body: text }
}

/** Sends one request; resolves with the status (0 for a transport error) and the error code in the answer. */
export function sendControl (socketPath, req, timeoutMs = 30_000) {
  return new Promise((resolve) => {
    let r
    try {
      // agent: false — a kept-alive socket the server closes while the next request is written fails with EPIPE (a client artefact).
      r = request({ socketPath, agent: false, method: req.method, path: req.path, headers: { 'content-type': 'application/json' } }, (res) => {
        const chunks = []
        res.on('data', (c) => { if (chunks.length < 64) chunks.push(c) })
        res.on('end', () => {
          let code
          try { const lines = Buffer.concat(chunks).toString('utf8').trim().split('\n'); const last = JSON.parse(lines[lines.length - 1]); code = last?.error?.code } catch {}
          resolve({ status: res.statusCode, code })
        })
        res.on('error', () => resolve({ status: res.statusCode, code: 'RESPONSE_ERROR' }))
      })
    } catch (err) {
      // Node's client refuses to send it (e.g. unescaped characters): not an input the node saw.
      resolve({ status: -1, code: err.code ?? 'CLIENT_REFUSED' }); return
    }
    r.setTimeout(timeoutMs, () => { r.destroy(new Error('timeout')) })
    r.on('error', (err) => resolve({ status: 0, code: err.message === 'timeout' ? 'TIMEOUT' : err.code ?? 'REQUEST_ERROR' }))
    r.end(req.body)
  })
}

/** Malformed HTTP straight onto the socket. */
export function sendRawHttp (socketPath, rng) {
  const junk = rng.pick([
    'GET /status HTTP/1.1\r\nContent-Length: -1\r\n\r\n',
    'POST /images HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{',
    'POST /images HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n',
    `GET /${'a'.repeat(100 * 1024)} HTTP/1.1\r\n\r\n`,
    'NOT HTTP AT ALL\r\n\r\n',
    `GET /status HTTP/1.1\r\n${'X-A: b\r\n'.repeat(3000)}\r\n`,
    Buffer.from(rng.bytes(256)).toString('latin1')
  ])
  return new Promise((resolve) => {
    const s = connect(socketPath)
    const done = () => { s.destroy(); resolve() }
    s.setTimeout(2000, done)
    s.on('error', done)
    s.on('close', done)
    s.on('connect', () => { s.write(junk, 'latin1', () => { setTimeout(done, 50) }) })
  })
}
