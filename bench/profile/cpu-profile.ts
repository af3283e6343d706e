import * as path from 'node:path';
import { z } from 'zod';

/**
 * Reads the `.cpuprofile` that `node --cpu-prof` writes when the relay exits and ranks functions by
 * self time: the samples in which the function itself was on top of the stack. A function appears
 * at many nodes of the call tree (once per distinct caller path), so nodes are summed per function
 * (name + script + line). Self time is hitCount × the mean sampling interval of the profile.
 */

const callFrameSchema = z.object({
  functionName: z.string(),
  url: z.string(),
  lineNumber: z.number(),
  columnNumber: z.number(),
});

const profileSchema = z.object({
  nodes: z.array(
    z.object({
      id: z.number(),
      callFrame: callFrameSchema,
      hitCount: z.number().optional(),
      children: z.array(z.number()).optional(),
    }),
  ),
  startTime: z.number(),
  endTime: z.number(),
  samples: z.array(z.number()).optional(),
});

export type CpuProfile = z.infer<typeof profileSchema>;

export interface ProfileEntry {
  /** Function name, `(anonymous)` when it has none, or V8's own `(garbage collector)`, `(program)`, `(idle)`. */
  name: string;
  /** `path:line` relative to the project, `node:…` for Node's internals, '' for V8 and native code. */
  location: string;
  /** Where the code comes from: `smarthop`, an npm package, `node`, or `v8`. */
  area: string;
  selfMs: number;
  /** Of the samples in which the relay was busy (everything but `(idle)`). */
  percentOfBusy: number;
  /**
   * The nearest caller in smarthop's or a package's code (Node's own internals are skipped) that
   * accounts for most of this function's self time, `name location`: a native entry such as
   * `writeUtf8String` says little until one sees which code called it.
   */
  topCaller: string | null;
}

export interface ProfileSummary {
  durationMs: number;
  sampleIntervalUs: number;
  busyMs: number;
  idleMs: number;
  top: ProfileEntry[];
  /** Self time per area, largest first. */
  areas: AreaTime[];
  /**
   * Self time per area of the code that caused it: Node's internals and native calls are charged to
   * their nearest caller in smarthop or a package (a socket write from smtp-server counts for
   * smtp-server); what has no such caller (GC, the event loop itself) stays `v8/native` or `node`.
   */
  attributed: AreaTime[];
}

export interface AreaTime {
  area: string;
  selfMs: number;
  percentOfBusy: number;
}

export function parseCpuProfile(text: string): CpuProfile {
  return profileSchema.parse(JSON.parse(text));
}

/** `root` is the project directory, so locations read `node_modules/smtp-server/…` and `dist/src/…`. */
export function summarizeProfile(profile: CpuProfile, limit: number, root: string): ProfileSummary {
  const totalHits = profile.nodes.reduce((n, node) => n + (node.hitCount ?? 0), 0);
  const durationUs = profile.endTime - profile.startTime;
  const intervalUs = totalHits > 0 ? durationUs / totalHits : 0;

  const parentOf = new Map<number, CpuProfile['nodes'][number]>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node);
  const label = (frame: CpuProfile['nodes'][number]['callFrame']) => {
    const location = frame.url === '' ? '' : `${displayPath(frame.url, root)}:${frame.lineNumber + 1}`;
    return { name: frame.functionName || '(anonymous)', location, key: `${frame.functionName}\u0000${location}` };
  };

  const byFunction = new Map<
    string,
    { name: string; location: string; area: string; hits: number; callers: Map<string, number> }
  >();
  const attributed = new Map<string, number>();
  let idleHits = 0;
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0) continue;
    if (node.callFrame.functionName === '(idle)') {
      idleHits += hits;
      continue;
    }
    const { name, location, key } = label(node.callFrame);
    const entry = byFunction.get(key) ?? {
      name,
      location,
      area: areaOf(node.callFrame.url, root),
      hits: 0,
      callers: new Map<string, number>(),
    };
    entry.hits += hits;
    const parent = firstCodeAncestor(node, parentOf);
    const own = node.callFrame.url !== '' && !node.callFrame.url.startsWith('node:');
    const charged = own
      ? areaOf(node.callFrame.url, root)
      : parent
        ? areaOf(parent.callFrame.url, root)
        : areaOf(node.callFrame.url, root);
    attributed.set(charged, (attributed.get(charged) ?? 0) + hits);
    if (parent) {
      const caller = label(parent.callFrame);
      const text = `${caller.name}${caller.location ? ` ${caller.location}` : ''}`;
      entry.callers.set(text, (entry.callers.get(text) ?? 0) + hits);
    }
    byFunction.set(key, entry);
  }

  const busyHits = totalHits - idleHits;
  const ms = (hits: number) => round2((hits * intervalUs) / 1000);
  const pct = (hits: number) => (busyHits > 0 ? round2((100 * hits) / busyHits) : 0);
  const ranked = [...byFunction.values()].sort((a, b) => b.hits - a.hits);
  const areas = new Map<string, number>();
  for (const entry of ranked) areas.set(entry.area, (areas.get(entry.area) ?? 0) + entry.hits);

  return {
    durationMs: round2(durationUs / 1000),
    sampleIntervalUs: round2(intervalUs),
    busyMs: ms(busyHits),
    idleMs: ms(idleHits),
    top: ranked.slice(0, limit).map((e) => ({
      name: e.name,
      location: e.location,
      area: e.area,
      selfMs: ms(e.hits),
      percentOfBusy: pct(e.hits),
      topCaller: [...e.callers.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? null,
    })),
    areas: byArea(areas),
    attributed: byArea(attributed),
  };

  function byArea(hitsPerArea: Map<string, number>): AreaTime[] {
    return [...hitsPerArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([area, hits]) => ({ area, selfMs: ms(hits), percentOfBusy: pct(hits) }));
  }
}

type ProfileNode = CpuProfile['nodes'][number];

/** Walks up past Node's internals and native frames; bounded by the depth of the call tree. */
function firstCodeAncestor(node: ProfileNode, parentOf: Map<number, ProfileNode>): ProfileNode | null {
  let current = parentOf.get(node.id);
  for (let depth = 0; current && depth < 200; depth++) {
    const { url, functionName } = current.callFrame;
    if (functionName === '(root)') return null;
    if (url !== '' && !url.startsWith('node:')) return current;
    current = parentOf.get(current.id);
  }
  return null;
}

function displayPath(url: string, root: string): string {
  if (!url.startsWith('file://')) return url; // node:internal/…, or V8's own
  const file = decodeURIComponent(url.slice('file://'.length));
  const relative = path.relative(root, file);
  return relative.startsWith('..') ? file : relative;
}

/** smarthop's own code, the npm package a file belongs to, Node's JavaScript, or V8/native. */
function areaOf(url: string, root: string): string {
  if (url === '') return 'v8/native';
  if (url.startsWith('node:')) return 'node';
  const file = displayPath(url, root);
  const packagePath = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file);
  if (packagePath) return packagePath[1];
  return file.startsWith('dist/src/') || file.startsWith('src/') ? 'smarthop' : file;
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

/** `thread`: which of the relay's threads the profile is of (node writes one per thread). */
export function formatProfile(summary: ProfileSummary, file: string, thread?: string): string {
  // Native code has no location of its own; its JavaScript caller is what explains it.
  const rows = summary.top.map((e, i) => [
    String(i + 1),
    e.selfMs.toFixed(1),
    e.percentOfBusy.toFixed(1),
    e.name,
    e.location || `(${e.area})${e.topCaller ? ` <- ${e.topCaller}` : ''}`,
  ]);
  const widths = [0, 1, 2].map((c) =>
    Math.max(...[['#', 'self ms', '% busy'][c], ...rows.map((r) => r[c])].map((s) => s.length)),
  );
  const nameWidth = Math.max(8, ...rows.map((r) => r[3].length));
  const line = (r: string[]) =>
    (
      `${r[0].padStart(widths[0])}  ${r[1].padStart(widths[1])}  ${r[2].padStart(widths[2])}  ` +
      `${r[3].padEnd(nameWidth)}  ${r[4]}`
    ).trimEnd();
  let out = `\nrelay CPU profile${thread ? ` (${thread})` : ''}: ${file}\n`;
  out +=
    `${(summary.durationMs / 1000).toFixed(1)} s profiled, busy ${(summary.busyMs / 1000).toFixed(1)} s, ` +
    `idle ${(summary.idleMs / 1000).toFixed(1)} s, one sample every ${summary.sampleIntervalUs.toFixed(0)} µs\n`;
  out += `top ${rows.length} functions by self time:\n`;
  out += `${line(['#', 'self ms', '% busy', 'function', 'location'])}\n${rows.map(line).join('\n')}\n`;
  const list = (areas: AreaTime[]) =>
    areas
      .slice(0, 10)
      .map((a) => `${a.area} ${a.percentOfBusy.toFixed(1)}%`)
      .join(', ');
  out += `self time by area: ${list(summary.areas)}\n`;
  out += `charged to the calling code: ${list(summary.attributed)}\n`;
  return out;
}
