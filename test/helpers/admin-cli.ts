import { Command, CommanderError } from 'commander';
import { registerAdminCommands } from '../../src/admin/commands';
import type { CliRun } from './child-relay';

/**
 * `smarthop queue …`, `status` and `reload` run in this process: the same commands (src/cli.ts
 * registers them the same way) writing to strings instead of stdout and stderr, their exit status
 * as cli.ts would set it. For tests whose point is a command's output and status; a node process
 * per command costs about half a second of CPU. What only a real process shows (the binary starts,
 * the exit status reaches the shell, the token comes from the environment) stays with `runCli`.
 * The environment here is the test process's: pass the token with `--token`.
 */
export async function runAdminCommand(args: string[]): Promise<CliRun> {
  const run: CliRun = { code: 0, stdout: '', stderr: '' };
  const program = new Command('smarthop').exitOverride().configureOutput({
    writeOut: (text) => (run.stdout += text),
    writeErr: (text) => (run.stderr += text),
  });
  registerAdminCommands(program, {
    out: (text) => (run.stdout += text),
    err: (text) => (run.stderr += text),
    setExitCode: (code) => (run.code = code),
  });
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    run.code = err.exitCode;
  }
  return run;
}
