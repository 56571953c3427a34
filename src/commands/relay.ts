import { Flags } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { runRelay } from '../backends/transport/relay.js';
import { setNonBlocking } from '../sys/unix-socket.js';

// Started by the socket transport, detached, with its sockets as fds 3 and 4.
export default class Relay extends QnhCommand {
  static override summary = 'Relay frames between a QEMU datagram socket (fd 4) and a packet socket (fd 3) until the owner exits (started by the helper).';
  static override hidden = true;
  static override flags = {
    'owner-pid': Flags.integer(),
    'owner-start': Flags.string(),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Relay);
    setNonBlocking(3, true);
    setNonBlocking(4, true);
    const owner = flags['owner-pid'] && flags['owner-start'] ? { pid: flags['owner-pid'], startTime: flags['owner-start'] } : null;
    await runRelay(3, 4, owner);
  }
}
