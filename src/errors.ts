// One error class per failure kind, each with its documented exit code. Only
// the CLI layer turns these into stderr lines and exit statuses; the library
// throws them. Keep this table in sync with README "Exit codes".
export const ExitCode = {
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  ACCESS_DENIED: 3,
  PERMISSION: 4,
  NOT_FOUND: 5,
  BAD_FD: 6,
  UNSUPPORTED: 7,
  CONFIG: 8,
  EXHAUSTED: 9,
  SETUP_FAILED: 10,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export class HelperError extends Error {
  readonly exitCode: ExitCodeValue;
  /** What the user can do about it; appended to the one-line message. */
  readonly hint: string | undefined;
  constructor(exitCode: ExitCodeValue, message: string, hint?: string) {
    super(message);
    this.exitCode = exitCode;
    this.hint = hint;
  }
  /** The single stderr line people see. */
  line(): string {
    return this.hint ? `${this.message}; ${this.hint}` : this.message;
  }
}

export class UsageError extends HelperError {
  constructor(message: string, hint = "run 'qemu-net-helper helper --help' for the accepted flags") {
    super(ExitCode.USAGE, message, hint);
  }
}
export class AccessDeniedError extends HelperError {
  constructor(message: string, hint?: string) { super(ExitCode.ACCESS_DENIED, message, hint); }
}
export class PermissionError extends HelperError {
  constructor(message: string, hint?: string) { super(ExitCode.PERMISSION, message, hint); }
}
export class NotFoundError extends HelperError {
  constructor(message: string, hint?: string) { super(ExitCode.NOT_FOUND, message, hint); }
}
export class BadFdError extends HelperError {
  constructor(message: string, hint?: string) { super(ExitCode.BAD_FD, message, hint); }
}
export class UnsupportedError extends HelperError {
  constructor(message: string, hint?: string) { super(ExitCode.UNSUPPORTED, message, hint); }
}
export class ConfigError extends HelperError {
  constructor(message: string, hint?: string) { super(ExitCode.CONFIG, message, hint); }
}
export class ExhaustedError extends HelperError {
  constructor(message: string, hint?: string) { super(ExitCode.EXHAUSTED, message, hint); }
}
export class SetupError extends HelperError {
  constructor(message: string, hint?: string) { super(ExitCode.SETUP_FAILED, message, hint); }
}

export function isHelperError(e: unknown): e is HelperError {
  return e instanceof HelperError || (typeof e === 'object' && e !== null && typeof (e as HelperError).exitCode === 'number' && typeof (e as HelperError).line === 'function');
}

/** Exit code and line for anything thrown, including bugs. */
export function describeError(e: unknown): { exitCode: ExitCodeValue; line: string } {
  // Duck-typed, not instanceof: the helper's fast path and its policy path are
  // separate bundles, each with its own copy of this class.
  if (isHelperError(e)) return { exitCode: e.exitCode, line: e.line() };
  const msg = e instanceof Error ? e.message : String(e);
  return { exitCode: ExitCode.INTERNAL, line: `internal error: ${msg}; please report it with the command line used` };
}
