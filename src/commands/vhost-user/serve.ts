import { Command, Flags } from '@oclif/core';
import { describeError, UsageError } from '../../errors.js';
import { checkInterfaceName } from '../../net/ifname.js';
import { VhostUserServer } from '../../vhost-user/server.js';

export default class Serve extends Command {
  static override summary = 'Serve vhost-user virtio-net ports in this process (QEMU -netdev vhost-user, DPDK virtio-user).';
  static override description = `One port per --socket. With --br each port gets a tap on that bridge; with two sockets and no --br the two ports are patched to each other (VM to VM); with one socket and no --br the port is a sink. Runs until SIGINT/SIGTERM, then removes its sockets and taps.

QEMU needs shared guest memory for vhost-user:
  -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem
  -chardev socket,id=c0,path=SOCKET -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0`;
  static override examples = [
    '<%= config.bin %> vhost-user serve --socket /run/vm1.sock --br br0',
    '<%= config.bin %> vhost-user serve --socket /tmp/a.sock --socket /tmp/b.sock --poll busy',
  ];
  static override flags = {
    socket: Flags.string({ summary: 'unix socket path of a port (repeatable)', multiple: true, required: true }),
    client: Flags.boolean({ summary: 'connect to front-ends that listen (QEMU server=on), retrying until they appear' }),
    br: Flags.string({ summary: 'bridge for the ports\' taps (the host side)' }),
    queues: Flags.integer({ summary: 'queue pairs per port', default: 1, min: 1, max: 8 }),
    poll: Flags.string({ summary: 'data path mode: event (wait for kicks) or busy (spin a core: lowest latency, highest rate)', options: ['event', 'busy'], default: 'event' }),
    'stats-interval': Flags.integer({ summary: 'print per-port counters to stderr every N seconds (0: never)', default: 0 }),
    quiet: Flags.boolean({ char: 'q', summary: 'no log lines' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Serve);
    const log = flags.quiet ? () => undefined : (m: string) => process.stderr.write(`vhost-user: ${m}\n`);
    let server: VhostUserServer | undefined;
    try {
      if (flags.br) checkInterfaceName(flags.br, 'bridge');
      if (new Set(flags.socket).size !== flags.socket.length) throw new UsageError('the same --socket is given twice');
      server = new VhostUserServer({
        sockets: flags.socket, client: flags.client, queuePairs: flags.queues, poll: flags.poll as 'event' | 'busy', log,
        ...(flags.br ? { bridge: flags.br } : {}),
      });
      await server.start();
    } catch (e) {
      await server?.stop();
      const { exitCode, line } = describeError(e);
      this.logToStderr(`qemu-net-helper: ${line}`);
      this.exit(exitCode);
    }
    const s = server!;
    log(`serving ${flags.socket.length} port(s), ${flags.queues} queue pair(s) each, ${flags.poll} mode`);
    const timer = flags['stats-interval'] > 0
      ? setInterval(() => { void s.stats().then((st) => log(JSON.stringify(st))); }, flags['stats-interval'] * 1000)
      : null;
    await new Promise<void>((resolve) => {
      const stop = (sig: string): void => {
        log(`${sig}: stopping`);
        resolve();
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    if (timer) clearInterval(timer);
    const final = await s.stats().catch(() => []);
    log(`final counters: ${JSON.stringify(final)}`);
    await s.stop();
  }
}
