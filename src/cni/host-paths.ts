// Where the CNI plugin writes (state directory) and connects (the switch's
// control socket). A network configuration is written by whoever may define
// networks (a NetworkAttachmentDefinition author), not by root, so it chooses
// neither: they come from the root caller's environment, else from a root-owned
// paths file — `qemu-net-helper.json` beside the plugin as the runtime ran it
// (runtimes do not pass their environment to every call: podman's cleanup
// process runs DEL without it), else /etc/qemu-net-helper/cni.json — else the
// fixed defaults. A network configuration may still name a path if it names
// the one in force (older configurations stay valid).
import { lstatSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { ENV, processHost, type HostContext } from '../host/context.js';
import { CniCode, CniError } from './errors.js';

export const PATHS_FILE_NAME = 'qemu-net-helper.json';
const SYSTEM_PATHS_FILE = '/etc/qemu-net-helper/cni.json';

const absolute = z.string().regex(/^\/[^\0]*$/, 'an absolute path');
const PathsSchema = z.object({ stateDir: absolute.optional(), switchControl: absolute.optional() }).strict();
type Paths = z.infer<typeof PathsSchema>;

const KEYS = ['stateDir', 'switchControl'] as const;

/** Why `path` (a file) and its directory cannot be trusted as root's, or null. */
export function notRootOwned(path: string): string | null {
  for (const [p, isDir] of [[path, false], [dirname(path), true]] as const) {
    const st = lstatSync(p);
    if (isDir ? !st.isDirectory() : !st.isFile()) return `${p} is not a ${isDir ? 'directory' : 'regular file'}`;
    if (st.uid !== 0) return `${p} is owned by uid ${st.uid}, not root`;
    if ((st.mode & 0o022) !== 0) return `${p} is writable by others (mode ${(st.mode & 0o7777).toString(8)})`;
  }
  return null;
}

/** The first paths file that exists (beside the plugin, then the system's), checked and parsed. */
export function readPathsFile(pluginPath: string | undefined): { file: string; paths: Paths } | null {
  const candidates = [...(pluginPath ? [join(dirname(pluginPath), PATHS_FILE_NAME)] : []), SYSTEM_PATHS_FILE];
  for (const file of candidates) {
    let exists = true;
    try { lstatSync(file); } catch { exists = false; }
    if (!exists) continue;
    const why = notRootOwned(file);
    if (why) throw new CniError(CniCode.INVALID_CONFIG, `paths file ${file} is not root's: ${why}`, 'make it and its directory root-owned and writable by root only');
    let parsed: unknown;
    try { parsed = JSON.parse(readFileSync(file, 'utf8')); } catch (e) {
      throw new CniError(CniCode.INVALID_CONFIG, `paths file ${file} is not JSON: ${(e as Error).message}`);
    }
    const r = PathsSchema.safeParse(parsed);
    if (!r.success) throw new CniError(CniCode.INVALID_CONFIG, `paths file ${file}: ${r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ')}`);
    return { file, paths: r.data };
  }
  return null;
}

/** The plugin's host context; `conf`'s path fields only confirm the paths in force. */
export function cniHost(conf: Partial<Record<(typeof KEYS)[number], string | undefined>>, env: NodeJS.ProcessEnv, pluginPath = process.argv[1]): HostContext {
  const host = processHost(env);
  const envVar = { stateDir: ENV.stateDir, switchControl: ENV.switchControl } as const;
  const fromFile = host.trusted ? readPathsFile(pluginPath) : null;
  for (const key of KEYS) {
    const v = fromFile?.paths[key];
    if (v !== undefined && !env[envVar[key]]) host[key] = v;
  }
  for (const key of KEYS) {
    const v = conf[key];
    if (!v || v === host[key]) continue;
    throw new CniError(CniCode.INVALID_CONFIG, `${key} '${v}' in the network configuration is not the plugin's (${host[key]}): a network configuration does not choose where root writes or connects`,
      `drop ${key}, or set it for the host in a root-owned ${PATHS_FILE_NAME} beside the plugin or ${SYSTEM_PATHS_FILE}`);
  }
  return host;
}
