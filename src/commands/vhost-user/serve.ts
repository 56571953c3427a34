import { Command, Flags } from '@oclif/core';
import { describeError, UsageError } from '../../errors.js';
import { checkInterfaceName } from '../../net/ifname.js';
import { checkControlFree, ControlServer } from '../../vhost-user/control/server.js';
import { encodeLine } from '../../vhost-user/control/codec.js';
import { VhostUserServer } from '../../vhost-user/server.js';
import { parseSocketMode, resolveGroup } from '../../vhost-user/socket-path.js';
import type { PortModeName } from '../../vhost-user/switch/forwarding.js';
import { fastPathStatus } from '../../vhost-user/virtq/native.js';
import { parseList, statsLines } from '../../vhost-user/control/view.js';
import { switchFamilies } from '../../vhost-user/metrics.js';
import { render } from '../../metrics/exposition.js';
import { serveMetrics, type MetricsEndpoint } from '../../metrics/http.js';
import { createLogger, LOG_LEVELS, type LogLevel } from '../../log.js';

export default class Serve extends Command {
  static override summary = 'Serve vhost-user virtio-net ports in this process: a learning switch (QEMU -netdev vhost-user, DPDK virtio-user).';
  static override description = `One switch port per --socket (more at run time through --control). MAC learning with ageing; unknown, broadcast and multicast destinations are flooded. --uplink DEV attaches a host device (AF_PACKET); --br BR attaches a tap of ours on bridge BR. --mode: veb (ports switch locally), vepa (everything goes to the uplink), private (a port reaches only the uplink). Runs until SIGINT/SIGTERM, then removes its sockets and tap.

QEMU needs shared guest memory for vhost-user:
  -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem
  -chardev socket,id=c0,path=SOCKET -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0`;
  static override examples = [
    '<%= config.bin %> vhost-user serve --socket /run/vm1.sock --socket /run/vm2.sock --br br0',
    '<%= config.bin %> vhost-user serve --socket /tmp/a.sock --socket /tmp/b.sock --poll busy',
    '<%= config.bin %> vhost-user serve --socket /run/a.sock --uplink eth1 --mode private --control /run/sw.ctl --events',
  ];
  static override flags = {
    socket: Flags.string({ summary: 'unix socket path of a port (repeatable)', multiple: true, default: [] }),
    client: Flags.boolean({ summary: 'connect to front-ends that listen (QEMU server=on), retrying until they appear' }),
    br: Flags.string({ summary: 'uplink: a tap of ours on this bridge' }),
    uplink: Flags.string({ summary: 'uplink: this host device, through an AF_PACKET socket (promiscuous)' }),
    mode: Flags.string({ summary: 'default port mode: veb (switch locally), vepa (all to the uplink), private (only the uplink)', options: ['veb', 'vepa', 'private'], default: 'veb' }),
    events: Flags.boolean({ summary: 'print events (connected, ready, disconnected, mac-learned, ...) as JSON lines on stdout' }),
    control: Flags.string({ summary: 'unix socket for JSON-line control: add-port, remove-port, set-mode, list, events' }),
    'socket-mode': Flags.string({ summary: 'permission bits of the sockets we create, octal (e.g. 0660)' }),
    'socket-group': Flags.string({ summary: 'group owner of the sockets we create (name or gid)' }),
    'allow-unsealed-memory': Flags.boolean({ summary: 'accept guest memory that cannot be sealed against shrinking (DPDK --no-huge, hugetlbfs files): a front-end truncating it kills every port' }),
    queues: Flags.integer({ summary: 'queue pairs per port', default: 1, min: 1, max: 8 }),
    poll: Flags.string({ summary: 'data path mode: event (wait for kicks) or busy (spin a core: lowest latency, highest rate)', options: ['event', 'busy'], default: 'event' }),
    'stats-interval': Flags.integer({ summary: 'log one line of counters per port and for the uplink every N seconds (0: never)', default: 0, min: 0 }),
    metrics: Flags.string({ summary: 'serve Prometheus metrics (GET /metrics) on this unix socket path or IP:PORT (e.g. 127.0.0.1:9469)' }),
    'log-level': Flags.string({ summary: 'least severe log lines printed: error, warn, info (default) or debug (debug adds every event); journald priorities under systemd', options: [...LOG_LEVELS] }),
    quiet: Flags.boolean({ char: 'q', summary: 'errors only (--log-level error)', exclusive: ['log-level'] }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Serve);
    const logger = createLogger({ level: flags.quiet ? 'error' : (flags['log-level'] as LogLevel | undefined) ?? 'info' });
    const log = (m: string, level: LogLevel = 'info'): void => logger[level](`vhost-user: ${m}`);
    let server: VhostUserServer | undefined;
    let control: ControlServer | undefined;
    let metrics: MetricsEndpoint | undefined;
    try {
      const hint = "run 'qemu-net-helper vhost-user serve --help'";
      if (flags.socket.length === 0 && !flags.control) throw new UsageError('give at least one --socket, or --control to add ports at run time', hint);
      if (flags.br) checkInterfaceName(flags.br, 'bridge');
      if (flags.uplink) checkInterfaceName(flags.uplink, 'uplink device');
      if (new Set(flags.socket).size !== flags.socket.length) throw new UsageError('the same --socket is given twice', hint);
      if (flags.control) checkControlFree(flags.control);
      const socketAccess = {
        ...(flags['socket-mode'] ? { mode: parseSocketMode(flags['socket-mode']) } : {}),
        ...(flags['socket-group'] ? { gid: resolveGroup(flags['socket-group']) } : {}),
      };
      server = new VhostUserServer({
        sockets: flags.socket, client: flags.client, queuePairs: flags.queues, poll: flags.poll as 'event' | 'busy', log,
        mode: flags.mode as PortModeName, socketAccess, allowUnsealedMemory: flags['allow-unsealed-memory'],
        ...(flags.br ? { bridge: flags.br } : {}), ...(flags.uplink ? { uplink: flags.uplink } : {}),
      });
      // Subscribed before start: the first port-added events are printed too.
      if (flags.events) server.events.on((e) => process.stdout.write(encodeLine(e)));
      if (logger.enabled('debug')) server.events.on((e) => log(`event ${JSON.stringify(e)}`, 'debug'));
      await server.start();
      if (flags.control) {
        control = new ControlServer(server, (m) => log(m, 'warn'));
        await control.start(flags.control, socketAccess);
      }
      if (flags.metrics) {
        const sw = server;
        metrics = await serveMetrics(flags.metrics, async () => render(switchFamilies(parseList(await sw.snapshot()))), (m) => log(m, 'warn'));
        log(`metrics on ${metrics.where} (GET /metrics)`);
      }
    } catch (e) {
      await metrics?.close();
      await control?.stop();
      await server?.stop();
      const { exitCode, line } = describeError(e);
      logger.error(`qemu-net-helper: ${line}`);
      this.exit(exitCode);
    }
    const s = server!;
    log(`serving ${flags.socket.length} port(s), ${flags.queues} queue pair(s) each, ${flags.poll} mode, ${flags.mode}${flags.control ? `, control ${flags.control}` : ''}, data path: ${fastPathStatus === 'native' ? 'native fast path + TypeScript' : `TypeScript only, fast path ${fastPathStatus}`}`);
    const timer = flags['stats-interval'] > 0
      ? setInterval(() => { void s.snapshot().then((v) => { for (const l of statsLines(v)) log(l); }); }, flags['stats-interval'] * 1000)
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
    const uplink = s.uplinkInfo();
    log(`final counters: ${JSON.stringify(final)}`);
    if (uplink) log(`uplink counters: ${JSON.stringify(uplink)}`);
    await metrics?.close();
    await control?.stop();
    await s.stop();
  }
}
