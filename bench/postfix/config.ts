import * as path from 'node:path';

/**
 * main.cf and master.cf of the private Postfix the benchmark compares against: a plain relay from
 * loopback to the sink, in its own directories, reachable only on 127.0.0.1. Everything not set
 * here is Postfix's default, including the fsync of every queue file before the 250 (Postfix has no
 * switch to turn that off), the 1 s in_flow_delay, and smtp connection caching on demand.
 */

export interface PostfixLayout {
  /** Holds main.cf and master.cf; `postfix -c <configDir>`. */
  configDir: string;
  queueDir: string;
  dataDir: string;
  maillog: string;
}

export interface PostfixPorts {
  /** The smtpd listener on 127.0.0.1. */
  smtp: number;
  /** The sink on 127.0.0.1, used as relayhost. */
  sink: number;
}

/**
 * Messages in flight to the relayhost at once. 20 is Postfix's own default
 * (default_destination_concurrency_limit), stated so the table can name it.
 */
export const POSTFIX_DESTINATION_CONCURRENCY = 20;

export function postfixLayout(baseDir: string): PostfixLayout {
  return {
    configDir: path.join(baseDir, 'etc'),
    queueDir: path.join(baseDir, 'queue'),
    dataDir: path.join(baseDir, 'data'),
    maillog: path.join(baseDir, 'maillog'),
  };
}

export function mainCf(layout: PostfixLayout, ports: PostfixPorts): string {
  const logDir = path.dirname(layout.maillog);
  return [
    '# written by bench/postfix for one benchmark round; the system Postfix is never read or changed',
    'compatibility_level = 3.6',
    `queue_directory = ${layout.queueDir}`,
    `data_directory = ${layout.dataDir}`,
    // Logging per message is part of what Postfix costs in production, so it stays on; to a file in
    // the temp dir because containers usually have no syslog (and it lets the bench count deferrals).
    `maillog_file = ${layout.maillog}`,
    `maillog_file_prefixes = ${logDir}`,
    '',
    '# loopback only: nothing of this instance is reachable from another host',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    'myhostname = postfix.bench.localhost',
    'mydomain = bench.localhost',
    '',
    '# a pure relay: no local delivery, every recipient goes to the sink',
    'mydestination =',
    'local_recipient_maps =',
    'alias_maps =',
    'alias_database =',
    'local_transport = error:5.1.1 local delivery is disabled in the benchmark',
    `relayhost = [127.0.0.1]:${ports.sink}`,
    'smtpd_relay_restrictions = permit_mynetworks, reject',
    'smtpd_tls_security_level = none',
    'smtp_tls_security_level = none',
    '',
    '# delivery to the sink: Postfix defaults, written out so the method can cite them',
    `default_destination_concurrency_limit = ${POSTFIX_DESTINATION_CONCURRENCY}`,
    'smtp_connection_cache_on_demand = yes',
    '',
  ].join('\n');
}

/**
 * The services a relay needs (no pickup, local, virtual, lmtp, tlsmgr). Debian's stock master.cf
 * chroots most daemons; that needs copies of /etc files inside the queue dir and only changes
 * process start-up, so nothing is chrooted here.
 */
export function masterCf(ports: PostfixPorts): string {
  const services: [string, string, string, string, string, string, string, string][] = [
    // service, type, private, unpriv, chroot, wakeup, maxproc, command
    [`127.0.0.1:${ports.smtp}`, 'inet', 'n', '-', 'n', '-', '-', 'smtpd'],
    ['cleanup', 'unix', 'n', '-', 'n', '-', '0', 'cleanup'],
    ['qmgr', 'unix', 'n', '-', 'n', '300', '1', 'qmgr'],
    ['rewrite', 'unix', '-', '-', 'n', '-', '-', 'trivial-rewrite'],
    ['bounce', 'unix', '-', '-', 'n', '-', '0', 'bounce'],
    ['defer', 'unix', '-', '-', 'n', '-', '0', 'bounce'],
    ['trace', 'unix', '-', '-', 'n', '-', '0', 'bounce'],
    ['verify', 'unix', '-', '-', 'n', '-', '1', 'verify'],
    ['flush', 'unix', 'n', '-', 'n', '1000?', '0', 'flush'],
    ['proxymap', 'unix', '-', '-', 'n', '-', '-', 'proxymap'],
    ['smtp', 'unix', '-', '-', 'n', '-', '-', 'smtp'],
    ['relay', 'unix', '-', '-', 'n', '-', '-', 'smtp'],
    ['showq', 'unix', 'n', '-', 'n', '-', '-', 'showq'],
    ['error', 'unix', '-', '-', 'n', '-', '-', 'error'],
    ['retry', 'unix', '-', '-', 'n', '-', '-', 'error'],
    ['discard', 'unix', '-', '-', 'n', '-', '-', 'discard'],
    ['anvil', 'unix', '-', '-', 'n', '-', '1', 'anvil'],
    ['scache', 'unix', '-', '-', 'n', '-', '1', 'scache'],
    ['postlog', 'unix-dgram', 'n', '-', 'n', '-', '1', 'postlogd'],
  ];
  const widths = services[0].map((_, column) => Math.max(...services.map((row) => row[column].length)));
  const lines = services.map((row) =>
    row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]))).join(' '),
  );
  return [
    '# written by bench/postfix: loopback smtpd plus the daemons a relay needs, none chrooted',
    ...lines,
    '',
  ].join('\n');
}
