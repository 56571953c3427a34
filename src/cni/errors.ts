// CNI errors: the spec's well-known codes, the error JSON a runtime reads on
// stdout, and the mapping from the helper's typed errors (exit codes) to it.
import { ExitCode, isHelperError } from '../errors.js';

/** Well-known codes of the CNI spec (0-99); 100+ are ours: 100 + the helper's exit code. */
export const CniCode = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE_FAILURE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  NOT_AVAILABLE: 50,
  LIMITED_CONNECTIVITY: 51,
  /** Plugin-specific: 100 + helper exit code (e.g. 109: no free VF, 105: device missing). */
  HELPER_BASE: 100,
} as const;

export class CniError extends Error {
  readonly code: number;
  readonly details: string | undefined;
  constructor(code: number, msg: string, details?: string) {
    super(msg);
    this.code = code;
    this.details = details;
  }
}

export interface CniErrorJson { cniVersion: string; code: number; msg: string; details?: string }

/** Any thrown value as the spec's error object. */
export function toCniError(e: unknown): CniError {
  if (e instanceof CniError) return e;
  if (isHelperError(e)) {
    // Usage and configuration problems are the user's network config: code 7.
    if (e.exitCode === ExitCode.USAGE || e.exitCode === ExitCode.CONFIG) return new CniError(CniCode.INVALID_CONFIG, e.message, e.hint);
    return new CniError(CniCode.HELPER_BASE + e.exitCode, e.message, e.hint);
  }
  const msg = e instanceof Error ? e.message : String(e);
  return new CniError(CniCode.HELPER_BASE + ExitCode.INTERNAL, `internal error: ${msg}`, 'please report it with the network configuration used');
}

export function errorJson(e: CniError, cniVersion: string): CniErrorJson {
  const out: CniErrorJson = { cniVersion, code: e.code, msg: e.message };
  if (e.details) out.details = e.details;
  return out;
}
