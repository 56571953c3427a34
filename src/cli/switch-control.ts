// What the `vhost-user` shell commands share: the --control flag (default
// $QEMU_NET_HELPER_SWITCH, else the path the README documents) and reading
// the switch's state through it.
import { Flags } from '@oclif/core';
import { DEFAULT_PATHS, ENV } from '../host/context.js';
import { controlOk } from '../vhost-user/control/client.js';
import { parseList, type SwitchView } from '../vhost-user/control/view.js';

export const controlFlag = Flags.string({
  summary: `control socket of the switch (default $${ENV.switchControl} or ${DEFAULT_PATHS.switchControl})`,
});

/** Only a path: connecting to a socket grants nothing the socket's permissions do not. */
export function controlPath(flag: string | undefined): string {
  return flag ?? (process.env[ENV.switchControl] || DEFAULT_PATHS.switchControl);
}

export async function readSwitch(path: string): Promise<SwitchView> {
  const { ok: _ok, ...state } = await controlOk(path, { op: 'list' });
  return parseList(state);
}
