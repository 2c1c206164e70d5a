import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.spec.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // End-to-end suites start real processes and sockets: keep files from fighting over 2 cores.
    fileParallelism: false,
    pool: 'forks'
  }
})
