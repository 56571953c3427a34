// Turning what iproute2 and the netdev ioctls say into the project's typed
// errors, for the kernel implementations that drive `ip`. Only the generic
// cases live here; each implementation maps its own specific refusals first
// (EBUSY on a macvtap parent means something different from EBUSY elsewhere).
import { ConfigError, isHelperError, NotFoundError, PermissionError, SetupError } from '../../errors.js';
import { IpError } from '../../net/ip.js';
import { SysError } from '../../sys/libc.js';

/** The kernel's message from an `ip` failure ("RTNETLINK answers: File exists" -> "File exists"). */
export function ipReason(e: IpError): string {
  const line = e.stderr.trim().split('\n').find((l) => l.trim()) ?? '';
  return line.replace(/^RTNETLINK answers:\s*/, '').replace(/^Error:\s*/, '').trim();
}

/** Rethrows `e` as the matching typed error; `what` says what we were doing. */
export function kernelFailure(e: unknown, what: string): never {
  // Duck-typed like describeError: the helper's bundles each carry their own copy of the classes.
  if (isHelperError(e) && !(e instanceof IpError)) throw e;
  if (e instanceof IpError) {
    const reason = ipReason(e);
    if (/Operation not permitted|Permission denied/i.test(reason)) {
      throw new PermissionError(`${what}: ${reason}`, 'the helper needs CAP_NET_ADMIN: run it as root or give it that capability');
    }
    if (/Cannot find device|does not exist/i.test(reason)) throw new NotFoundError(`${what}: ${reason}`);
    if (/File exists/i.test(reason)) throw new ConfigError(`${what}: ${reason}`);
    throw new SetupError(`${what}: ${reason}`);
  }
  if (e instanceof SysError) {
    if (e.code === 'EPERM' || e.code === 'EACCES') {
      throw new PermissionError(`${what}: ${e.message}`, 'the helper needs CAP_NET_ADMIN: run it as root or give it that capability');
    }
    if (e.code === 'ENODEV') throw new NotFoundError(`${what}: ${e.message}`);
    throw new SetupError(`${what}: ${e.message}`);
  }
  throw e;
}

/** Reads a string parameter of the policy candidate; wrong types are a configuration error. */
export function stringParam(params: Record<string, unknown>, key: string): string | undefined {
  const v = params[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v === '') throw new ConfigError(`parameter '${key}' must be a non-empty string, not ${JSON.stringify(v)}`);
  return v;
}

export function booleanParam(params: Record<string, unknown>, key: string): boolean | undefined {
  const v = params[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new ConfigError(`parameter '${key}' must be true or false, not ${JSON.stringify(v)}`);
  return v;
}

/** A `data` field of an owned object, checked: release() gets JSON that may come from an older or edited record. */
export function dataString(data: Record<string, unknown>, key: string, kind: string): string {
  const v = data[key];
  if (typeof v !== 'string' || v === '') throw new SetupError(`owned object of kind '${kind}' has no valid '${key}' (got ${JSON.stringify(v)})`);
  return v;
}

export function dataNumber(data: Record<string, unknown>, key: string, kind: string): number {
  const v = data[key];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new SetupError(`owned object of kind '${kind}' has no valid '${key}' (got ${JSON.stringify(v)})`);
  return v;
}
