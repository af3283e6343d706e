// @ts-check
const { mkdtempSync, readdirSync, readFileSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const path = require('node:path');

/**
 * A jest reporter that ends the run with every skipped test and why it was skipped. Test files say
 * why through test/helpers/skip.ts, which appends to a file in the directory this reporter names in
 * SMARTHOP_TEST_SKIPS (workers start after the reporter, so they inherit it). Without it a reason
 * was printed only when the file ran alone: in a full run jest shows a count, not the cause.
 */
class SkipSummary {
  /** @param {import('@jest/types').Config.GlobalConfig} globalConfig */
  constructor(globalConfig) {
    this.rootDir = globalConfig.rootDir;
    // With -t, tests left out by the name filter count as skipped too: only recorded reasons are news then.
    this.filtered = Boolean(globalConfig.testNamePattern);
    this.dir = mkdtempSync(path.join(tmpdir(), 'smarthop-skips-'));
    process.env.SMARTHOP_TEST_SKIPS = this.dir;
  }

  /**
   * @param {unknown} _contexts
   * @param {import('@jest/test-result').AggregatedResult} results
   */
  onRunComplete(_contexts, results) {
    /** @type {Map<string, string[]>} */
    const reasons = new Map();
    for (const name of readdirSync(this.dir)) {
      for (const line of readFileSync(path.join(this.dir, name), 'utf8').split('\n').filter(Boolean)) {
        const { file: testPath, reason } = JSON.parse(line);
        const file = path.relative(this.rootDir, testPath);
        reasons.set(file, [...new Set([...(reasons.get(file) ?? []), reason])]);
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    const rows = [];
    for (const result of results.testResults) {
      const file = path.relative(this.rootDir, result.testFilePath);
      const skipped = result.numPendingTests;
      if (!reasons.has(file) && (skipped === 0 || this.filtered)) continue;
      const why = reasons.get(file) ?? ['no reason given (use test/helpers/skip.ts)'];
      rows.push(`  ${file}: ${skipped} skipped: ${why.join('; ')}`);
    }
    if (rows.length === 0) return;
    process.stderr.write(`\nSkipped on this machine:\n${rows.join('\n')}\n\n`);
  }
}

module.exports = SkipSummary;
