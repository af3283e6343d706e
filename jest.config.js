/** How every test file is compiled: swc strips the types (tsc checks them in `npm run build`). */
const common = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  // `await import('./x.js')` (how TypeScript wants a lazy import written) finds the source under test.
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } }] },
};

/**
 * Two projects: `unit` (npm run test:unit) and `e2e`, the files named *.e2e.test.ts, which start the
 * relay and its smart hosts on real sockets. `npm test` runs both.
 * @type {import('jest').Config}
 */
module.exports = {
  projects: [
    { ...common, displayName: 'unit', testMatch: ['**/*.test.ts'], testPathIgnorePatterns: ['\\.e2e\\.test\\.ts$'] },
    { ...common, displayName: 'e2e', testMatch: ['**/*.e2e.test.ts'] },
  ],
  // Worker threads and child processes run dist/: it is built first when older than the source.
  globalSetup: '<rootDir>/test/setup/global-setup.ts',
  globalTeardown: '<rootDir>/test/setup/global-teardown.ts',
  reporters: ['default', '<rootDir>/test/setup/skip-summary.js'],
  testSequencer: '<rootDir>/test/setup/sequencer.js',
  // Every end-to-end test binds real sockets and spools to real disk; a couple of workers keeps the 2-core CI honest.
  maxWorkers: 2,
  testTimeout: 30000,
};
