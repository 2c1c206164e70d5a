#!/usr/bin/env node
// `pnpm bench <name>`: runs bench/<name>.js. Each benchmark prints a table and writes bench/results/<name>.json.
import { existsSync, readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

const here = dirname(fileURLToPath(import.meta.url))
const name = process.argv[2]
const known = readdirSync(here).filter(f => f.endsWith('.js') && f !== 'run.js').map(f => f.slice(0, -3))
if (name == null || !existsSync(join(here, `${name}.js`))) {
  console.error(`usage: pnpm bench <name>   (one of: ${known.join(', ')})`)
  process.exit(2)
}
process.argv.splice(2, 1)
await import(join(here, `${name}.js`))
