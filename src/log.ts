// Levelled log lines on stderr for the long-running commands (`vhost-user
// serve`, `daemon`): error, warn, info, debug; lines under the chosen level
// are dropped. When stderr is the journal (systemd sets JOURNAL_STREAM to its
// "device:inode"), each line starts with its syslog priority as sd-daemon(3)
// describes (<3> error, <4> warning, <6> info, <7> debug), so `journalctl -p`
// filters them; elsewhere lines are printed as they are.
import { fstatSync } from 'node:fs';

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** syslog priorities (sd-daemon.h SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG). */
const PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };

export type Logger = Record<LogLevel, (line: string) => void> & { readonly level: LogLevel; enabled(level: LogLevel): boolean };

/** Whether fd `fd` is the stream JOURNAL_STREAM names (not merely inherited by a child whose stderr went elsewhere). */
export function isJournalStream(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** One line as written: with its priority prefix for the journal. */
function formatLine(level: LogLevel, line: string, journal: boolean): string {
  return journal ? `<${PRIORITY[level]}>${line}\n` : `${line}\n`;
}

export function createLogger(opts: { level?: LogLevel; journal?: boolean; write?: (s: string) => void } = {}): Logger {
  const level = opts.level ?? 'info';
  const journal = opts.journal ?? isJournalStream();
  const write = opts.write ?? ((s: string) => { process.stderr.write(s); });
  const max = LOG_LEVELS.indexOf(level);
  const enabled = (l: LogLevel): boolean => LOG_LEVELS.indexOf(l) <= max;
  const at = (l: LogLevel) => (line: string): void => { if (enabled(l)) write(formatLine(l, line, journal)); };
  return { level, enabled, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}
