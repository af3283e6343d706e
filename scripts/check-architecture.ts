import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseSync } from '@swc/core';

/**
 * The rules of docs/architecture.md, checked on the source itself: which top-level folder of src/
 * may import which, no lazy `require()` and no process-global runtime tricks, and private entry
 * points of libraries only in that library's adapter module. Every `import`, `import type`,
 * `export … from`, `import()`, `typeof import()` and `require()` counts: a type-only import ties two
 * folders together as much as any other. Run by test/architecture.test.ts in `npm test`, and on its
 * own with `npm run check:architecture`.
 */

/** What every stage may use: the message model, the config's plain data, counters, the events port. */
const BASE = ['message', 'config', 'limits', 'observe'];
/** The stages, in the order a later one may import an earlier one. */
const STAGES = ['spool', 'ingress', 'policy', 'forward'];

/**
 * The folders of src/ in layer order, each with the folders it may import. Every folder lists only
 * folders above it, so no cycle can form.
 */

export const LAYERS: ReadonlyArray<{ folder: string; mayImport: readonly string[] }> = [
  { folder: 'types', mayImport: [] },
  { folder: 'message', mayImport: [] },
  { folder: 'config', mayImport: ['message'] },
  { folder: 'limits', mayImport: ['message', 'config'] },
  { folder: 'observe', mayImport: ['message', 'config', 'limits'] },
  { folder: 'spool', mayImport: BASE },
  { folder: 'ingress', mayImport: [...BASE, 'spool'] },
  { folder: 'policy', mayImport: [...BASE, 'spool', 'ingress'] },
  { folder: 'forward', mayImport: [...BASE, 'spool', 'ingress', 'policy'] },
  { folder: 'trace', mayImport: BASE },
  { folder: 'lifecycle', mayImport: [...BASE, 'forward'] },
  { folder: 'admin', mayImport: [...BASE, ...STAGES, 'trace', 'lifecycle'] },
  { folder: 'tools', mayImport: [...BASE, ...STAGES, 'trace', 'lifecycle', 'admin'] },
];

/** Files at the top of src/: leaves any folder may import, and the two entry points that wire it all. */
export const ROOT_FILES: Readonly<Record<string, 'leaf' | 'entry'>> = {
  'version.ts': 'leaf',
  'pinned-library.ts': 'leaf',
  'nodemailer-adapter.ts': 'leaf',
  'relay.ts': 'entry',
  'cli.ts': 'entry',
};

/** Entry points below a library's public API, and the one module (relative to src/) allowed to import them. */
export const PRIVATE_ENTRY_POINTS: ReadonlyArray<{ prefix: string; adapter: string | null }> = [
  { prefix: 'nodemailer/lib/', adapter: 'nodemailer-adapter.ts' },
  { prefix: 'smtp-server/lib/', adapter: 'ingress/smtp-server-adapter.ts' },
  // src/ uses mailauth's public API only (the tests read its body hasher as an oracle).
  { prefix: 'mailauth/lib/', adapter: null },
];

/** Imports that change the process for every module in it (V8 flags at run time). */
const FORBIDDEN_IMPORTS: ReadonlyArray<{ from: readonly string[]; name: string; why: string }> = [
  {
    from: ['v8', 'node:v8'],
    name: 'setFlagsFromString',
    why: 'V8 flags are launch settings (lifecycle/launch-settings.ts), never set at run time',
  },
];

export interface Violation {
  /** Relative to src/. */
  file: string;
  line: number;
  message: string;
}

/** Every broken rule in the TypeScript files below `srcDir`, in file order. */
export function architectureViolations(srcDir: string): Violation[] {
  const violations: Violation[] = [];
  for (const file of sourceFiles(srcDir)) violations.push(...fileViolations(srcDir, file));
  return violations;
}

function sourceFiles(dir: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...sourceFiles(full));
    else if (entry.name.endsWith('.ts')) files.push(full);
  }
  return files.sort();
}

/** What a file is in the layout: a folder's module, a root file, or neither (itself a violation). */
type Place =
  { kind: 'folder'; folder: string } | { kind: 'root'; role: 'leaf' | 'entry'; name: string } | { kind: 'unknown' };

function placeOf(srcDir: string, file: string): Place {
  const parts = path.relative(srcDir, file).split(path.sep);
  if (parts.length === 1) {
    const name = parts[0].replace(/\.js$/, '.ts').replace(/(?<!\.ts)$/, '.ts');
    const role = ROOT_FILES[name];
    return role ? { kind: 'root', role, name } : { kind: 'unknown' };
  }
  const known = LAYERS.some((layer) => layer.folder === parts[0]);
  return known ? { kind: 'folder', folder: parts[0] } : { kind: 'unknown' };
}

function fileViolations(srcDir: string, file: string): Violation[] {
  const relative = path.relative(srcDir, file).split(path.sep).join('/');
  const own = placeOf(srcDir, file);
  const violations: Violation[] = [];
  const source = readFileSync(file, 'utf8');
  const lines = lineStarts(Buffer.from(source, 'utf8'));
  const report = (offset: number, message: string) => {
    violations.push({ file: relative, line: lineOf(lines, offset), message });
  };
  if (own.kind === 'unknown') {
    report(0, `${relative} is outside the layout: put it in one of ${LAYERS.map((l) => l.folder).join(', ')}`);
  }

  const ast = parseSync(source, { syntax: 'typescript', target: 'es2022' });
  for (const use of moduleUses(ast)) {
    const { offset } = use;
    if (use.kind === 'require') report(offset, `require('${use.specifier}'): use a plain import`);
    if (use.kind === 'dynamic' && !(own.kind === 'root' && own.name === 'cli.ts')) {
      report(offset, `import('${use.specifier}'): only cli.ts loads a command's modules as it runs; import plainly`);
    }
    for (const rule of FORBIDDEN_IMPORTS) {
      if (!rule.from.includes(use.specifier) || !use.names.includes(rule.name)) continue;
      report(offset, `${rule.name} from ${use.specifier}: ${rule.why}`);
    }
    const entry = PRIVATE_ENTRY_POINTS.find((point) => use.specifier.startsWith(point.prefix));
    if (entry && relative !== entry.adapter) {
      const allowed = entry.adapter === null ? 'no module of src/ uses it' : `only src/${entry.adapter} may use it`;
      report(offset, `${use.specifier} is below the library's public API: ${allowed}`);
    }
    if (use.specifier.startsWith('.')) {
      const problem = layeringProblem(srcDir, file, own, use.specifier);
      if (problem) report(offset, problem);
    }
  }
  for (const offset of requireCacheUses(ast)) report(offset, 'require.cache: modules stay as Node loaded them');
  return violations.sort((a, b) => a.line - b.line);
}

function layeringProblem(srcDir: string, file: string, own: Place, specifier: string): string | undefined {
  const resolved = path.resolve(path.dirname(file), specifier);
  if (path.relative(srcDir, resolved).startsWith('..')) return `${specifier} leaves src/`;
  const target = placeOf(srcDir, resolved);
  if (target.kind === 'unknown') return undefined; // reported on the file itself
  if (own.kind === 'root' && own.role === 'entry') {
    if (target.kind === 'root' && target.name === 'cli.ts') return 'nothing imports cli.ts';
    return undefined;
  }
  if (target.kind === 'root') {
    return target.role === 'leaf' ? undefined : `${target.name} wires the relay: nothing below it imports it`;
  }
  if (own.kind !== 'folder' || own.folder === target.folder) return undefined;
  const allowed = LAYERS.find((layer) => layer.folder === own.folder)?.mayImport ?? [];
  if (allowed.includes(target.folder)) return undefined;
  const may = allowed.join(', ') || 'no other folder';
  return `${own.folder}/ may not import ${target.folder}/ (${specifier}); ${own.folder}/ may import ${may}`;
}

interface ModuleUse {
  kind: 'static' | 'dynamic' | 'require';
  specifier: string;
  /** The names an import declaration takes (for the forbidden ones). */
  names: string[];
  offset: number;
}

interface AstNode {
  type?: string;
  span?: { start: number };
  [key: string]: unknown;
}

function isNode(value: unknown): value is AstNode {
  return value !== null && typeof value === 'object';
}

function walk(node: unknown, visit: (node: AstNode) => void): void {
  if (Array.isArray(node)) {
    for (const item of node) walk(item, visit);
    return;
  }
  if (!isNode(node)) return;
  visit(node);
  for (const [key, value] of Object.entries(node)) if (key !== 'span') walk(value, visit);
}

function stringValue(node: unknown): string | undefined {
  return isNode(node) && node.type === 'StringLiteral' && typeof node.value === 'string' ? node.value : undefined;
}

function moduleUses(ast: unknown): ModuleUse[] {
  const uses: ModuleUse[] = [];
  walk(ast, (node) => {
    const offset = node.span?.start ?? 0;
    switch (node.type) {
      case 'ImportDeclaration':
      case 'ExportAllDeclaration':
      case 'ExportNamedDeclaration': {
        const specifier = stringValue(node.source);
        if (specifier === undefined) return;
        const listed = Array.isArray(node.specifiers) ? node.specifiers : [];
        const names = listed.map(importedName).filter((name): name is string => name !== undefined);
        uses.push({ kind: 'static', specifier, names, offset });
        return;
      }
      case 'TsImportType': {
        const specifier = stringValue(node.argument);
        if (specifier !== undefined) uses.push({ kind: 'static', specifier, names: [], offset });
        return;
      }
      case 'TsImportEqualsDeclaration': {
        const reference = node.moduleRef;
        if (!isNode(reference) || reference.type !== 'TsExternalModuleReference') return;
        const specifier = stringValue(reference.expression);
        if (specifier !== undefined) uses.push({ kind: 'require', specifier, names: [], offset });
        return;
      }
      case 'CallExpression': {
        const callee = node.callee;
        if (!isNode(callee)) return;
        const first = Array.isArray(node.arguments) ? node.arguments[0] : undefined;
        const specifier = stringValue(isNode(first) ? first.expression : undefined) ?? '<computed>';
        const isRequire = callee.type === 'Identifier' && callee.value === 'require';
        if (callee.type !== 'Import' && !isRequire) return;
        uses.push({ kind: isRequire ? 'require' : 'dynamic', specifier, names: [], offset });
        return;
      }
      default:
    }
  });
  return uses;
}

function importedName(specifier: unknown): string | undefined {
  if (!isNode(specifier) || specifier.type !== 'ImportSpecifier') return undefined;
  const imported = isNode(specifier.imported) ? specifier.imported : specifier.local;
  return isNode(imported) && typeof imported.value === 'string' ? imported.value : undefined;
}

function requireCacheUses(ast: unknown): number[] {
  const offsets: number[] = [];
  walk(ast, (node) => {
    if (node.type !== 'MemberExpression' || !isNode(node.object) || !isNode(node.property)) return;
    const onRequire = node.object.type === 'Identifier' && node.object.value === 'require';
    if (onRequire && node.property.value === 'cache') offsets.push(node.span?.start ?? 0);
  });
  return offsets;
}

/** Where each line starts, in bytes: swc's spans count UTF-8 bytes. */
function lineStarts(bytes: Buffer): number[] {
  const starts = [0];
  for (let i = bytes.indexOf(0x0a); i !== -1; i = bytes.indexOf(0x0a, i + 1)) starts.push(i + 1);
  return starts;
}

/** The line of a span position (swc counts bytes from 1; 0 stands for the file as a whole). */
function lineOf(starts: readonly number[], position: number): number {
  let line = 0;
  while (line + 1 < starts.length && starts[line + 1] <= position - 1) line++;
  return line + 1;
}

if (require.main === module) {
  const srcDir = path.resolve(__dirname, '..', '..', 'src');
  const violations = architectureViolations(srcDir);
  for (const v of violations) process.stderr.write(`src/${v.file}:${v.line}: ${v.message}\n`);
  const summary = violations.length === 0 ? 'src/ follows docs/architecture.md' : `${violations.length} violation(s)`;
  process.stdout.write(`architecture: ${summary}\n`);
  process.exitCode = violations.length === 0 ? 0 : 1;
}
