#!/usr/bin/env node
/**
 * Process entry of `shoal-workload`: a real process that stands in for a VM during migration
 * tests and benchmarks. See `cli.ts` for the commands.
 */

import { main } from './cli.js'

main(process.argv.slice(2)).then(
  (code) => {
    // Not process.exit(): for `run`, the exit must wait for stdout and the closed files.
    process.exitCode = code
  },
  (error: unknown) => {
    process.stderr.write(`shoal-workload: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
    process.exitCode = 1
  }
)
