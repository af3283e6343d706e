import { rmSync } from 'node:fs';

/** jest's globalTeardown: removes the run's shared directory (see global-setup.ts). */
export default function globalTeardown(): void {
  const runDir = process.env.SMARTHOP_TEST_RUN_DIR;
  if (runDir) rmSync(runDir, { recursive: true, force: true });
}
