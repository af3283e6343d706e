/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // `await import('./x.js')` (how TypeScript wants a lazy import written) finds the source under test.
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } }] },
  // Every end-to-end test binds real sockets and spools to real disk; a couple of workers keeps the 2-core CI honest.
  maxWorkers: 2,
  testTimeout: 30000,
};
