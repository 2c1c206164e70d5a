/**
 * @packageDocumentation
 * The `shoal` command line: `shoal node`, `shoal migrate`, `shoal status`, `shoal image`,
 * `shoal demo`. The library parts (formatting, control client) are exported for scripts.
 *
 * @example
 * ```ts
 * import { formatReport } from '@shoal/cli'
 * console.log(formatReport(report))
 * ```
 */
export * from './format.js'
export * from './control-client.js'
export * from './args.js'
export { checkCreateOptions } from './commands/image.js'
