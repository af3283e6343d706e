const { availableParallelism } = require('node:os');

/** How every test file is compiled: swc strips the types (tsc checks them in `npm run build`). */
const common = {
  testEnvironment: 'node',
  // Code under test runs in a vm context, where every lookup of a global such as Math goes through
  // the context's interceptors: about a microsecond, 30-100 times a plain call. The trace index's
  // hashing (Math.imul per character) and the oracle tests spent most of their time there. Named here,
  // these are handed to each module as parameters instead. Not Date (fake timers replace it), nor
  // names a loaded module declares itself (Buffer, Symbol, Promise, ...): that would not compile.
  sandboxInjectedGlobals: ['Math', 'JSON', 'Number', 'Array', 'Object', 'String'],
  roots: ['<rootDir>/test'],
  // `await import('./x.js')` (how TypeScript wants a lazy import written) finds the source under test.
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': [
      '@swc/jest',
      { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } },
    ],
  },
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
  // Two workers per core (four on two cores): end-to-end files spend much of their time waiting on
  // sockets, child processes and timers, and three workers on two cores left them idle about a tenth
  // of the run. Five only added contention. Computed here because jest reads a percentage above 100%
  // as a plain count.
  maxWorkers: Math.max(2, availableParallelism() * 2),
  testTimeout: 30000,
};
