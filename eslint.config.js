// ESLint for the library packages (STYLE.md): explicit return types, only Error objects thrown,
// no console outside the CLI. Benchmarks, examples and tests are scripts and are not linted here.
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**'] },
  {
    files: ['packages/*/src/**/*.ts'],
    extends: [tseslint.configs.base],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/explicit-function-return-type': ['error', { allowExpressions: true, allowTypedFunctionExpressions: true, allowHigherOrderFunctions: true }],
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'error'
    }
  },
  {
    // The CLI and the workload's own entry point talk to a terminal.
    files: ['packages/cli/src/**/*.ts', 'packages/workload/src/bin.ts', 'packages/workload/src/cli.ts'],
    rules: { 'no-console': 'off' }
  }
)
