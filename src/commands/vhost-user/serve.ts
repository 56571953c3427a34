import { Command, Flags } from '@oclif/core';
import { describeError, UsageError } from '../../errors.js';
import { checkInterfaceName } from '../../net/ifname.js';
import { checkControlFree, ControlServer, DEFAULT_MAX_TENANT_PORTS } from '../../vhost-user/control/server.js';
import { encodeLine } from '../../vhost-user/control/codec.js';
import { VhostUserServer } from '../../vhost-user/server.js';
import { parseSocketMode, resolveGroup } from '../../vhost-user/socket-path.js';
import { parseOwnerSpec } from '../../vhost-user/tenancy.js';
import { DEFAULT_MEMORY_LIMITS, formatBytes, MAX_REGIONS, parseByteSize } from '../../vhost-user/device/memory-table.js';
import { fastPathStatus } from '../../vhost-user/virtq/native.js';
import { parseList, statsLines } from '../../vhost-user/control/view.js';
import { DEFAULT_SWITCH_CONFIG, loadSwitchConfig, mergeSettings, saveSwitchConfig, settingsToFile, type SwitchSettings, UPLINK_TX } from '../../vhost-user/config.js';
import { switchFamilies } from '../../vhost-user/metrics.js';
import { render } from '../../metrics/exposition.js';
import { parseMetricsAddress, serveMetrics, type MetricsEndpoint } from '../../metrics/http.js';
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
    '<%= config.bin %> vhost-user serve --socket /run/vm/alice.sock --socket-owner alice --control /run/sw.ctl --control-group netadm',
  ];
  static override flags = {
    socket: Flags.string({ summary: 'unix socket path of a port (repeatable)', multiple: true, default: [] }),
    client: Flags.boolean({ summary: 'connect to front-ends that listen (QEMU server=on), retrying until they appear' }),
    br: Flags.string({ summary: 'uplink: a tap of ours on this bridge' }),
    uplink: Flags.string({ summary: 'uplink: this host device, through an AF_PACKET socket (promiscuous)' }),
    'uplink-tx': Flags.string({ summary: 'how frames leave the --uplink device: auto (AF_XDP on its queue 0 where the kernel allows, else the packet TX ring; the default), xdp (AF_XDP or fail), packet (the packet TX ring)', options: [...UPLINK_TX] }),
    mode: Flags.string({ summary: 'default port mode: veb (switch locally; the default), vepa (all to the uplink), private (only the uplink)', options: ['veb', 'vepa', 'private'] }),
    events: Flags.boolean({ summary: 'print events (connected, ready, disconnected, mac-learned, ...) as JSON lines on stdout' }),
    control: Flags.string({ summary: 'unix socket for JSON-line control: add-port, remove-port, set-mode, list, events (root only, mode 0600, unless --control-group)' }),
    'control-group': Flags.string({ summary: 'delegate the control socket to this group (mode 0660): its members manage only their own ports' }),
    'max-ports-per-user': Flags.integer({ summary: `ports one delegated (non-root) control user may have at once (default ${DEFAULT_MAX_TENANT_PORTS})`, min: 1, max: 4096 }),
    'socket-owner': Flags.string({ summary: 'owner of the --socket ports, USER[:GROUP]: the only non-root user whose front-end may connect (default: the switch\'s own user)' }),
    'socket-mode': Flags.string({ summary: 'permission bits of root-configured port sockets, octal (default 0600, 0660 with --socket-group)' }),
    'socket-group': Flags.string({ summary: 'group of root-configured port sockets (name or gid); members whose primary group it is may connect when the mode allows' }),
    'max-guest-memory': Flags.string({ summary: `most guest memory one port may map, e.g. 64G (default and most ${formatBytes(DEFAULT_MEMORY_LIMITS.maxBytes)})` }),
    'max-mem-regions': Flags.integer({ summary: `most memory regions in one port's table (default and most ${MAX_REGIONS})`, min: 1, max: MAX_REGIONS }),
    'allow-unsealed-memory': Flags.boolean({ summary: 'accept guest memory that cannot be sealed against shrinking (DPDK --no-huge, hugetlbfs files): a front-end truncating it kills every port' }),
    offloads: Flags.string({ summary: 'offer checksum and TCP segmentation offloads (CSUM, TSO4/6, ECN) to guests: on (the default), or off to make every guest checksum and segment itself', options: ['on', 'off'] }),
    queues: Flags.integer({ summary: 'queue pairs per port (default 1)', min: 1, max: 8 }),
    poll: Flags.string({ summary: 'data path mode: event (wait for kicks; the default) or busy (spin a core: lowest latency, highest rate)', options: ['event', 'busy'] }),
    'stats-interval': Flags.integer({ summary: 'log one line of counters per port and for the uplink every N seconds (default 0: never)', min: 0 }),
    config: Flags.string({ summary: `configuration file: ports, uplink, modes, control path... (default ${DEFAULT_SWITCH_CONFIG} when it exists; 'none': no file). Flags win over it; the control op "save" writes the running ports back` }),
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
    let cfg!: SwitchSettings;
    // The file `save` writes: the one read, or the default path (created by the first save).
    const configFile = flags.config === 'none' ? null : flags.config ?? DEFAULT_SWITCH_CONFIG;
    try {
      const hint = "run 'qemu-net-helper vhost-user serve --help'";
      const file = configFile ? loadSwitchConfig(configFile, flags.config === undefined) : null;
      if (file) log(`configuration ${configFile}`);
      cfg = mergeSettings(file, flags);
      if (cfg.ports.length === 0 && !cfg.control) throw new UsageError('give at least one --socket, or --control to add ports at run time (or a --config file with them)', hint);
      if ('bridge' in (cfg.uplink ?? {})) checkInterfaceName((cfg.uplink as { bridge: string }).bridge, 'bridge');
      if ('device' in (cfg.uplink ?? {})) checkInterfaceName((cfg.uplink as { device: string }).device, 'uplink device');
      if (cfg.uplinkTx !== 'auto' && !('device' in (cfg.uplink ?? {}))) throw new UsageError(`--uplink-tx ${cfg.uplinkTx} is for an --uplink device (a --br tap has one way out)`, hint);
      if (cfg.metrics) parseMetricsAddress(cfg.metrics);
      if (cfg.control) checkControlFree(cfg.control);
      const socketAccess = {
        ...(cfg.socketMode ? { mode: parseSocketMode(cfg.socketMode) } : {}),
        ...(cfg.socketGroup !== undefined ? { gid: resolveGroup(String(cfg.socketGroup)) } : {}),
      };
      const owner = cfg.socketOwner ? parseOwnerSpec(cfg.socketOwner) : undefined;
      // --socket-group names the sockets' group, also for a --socket-owner given without one.
      const defaultOwner = owner && socketAccess.gid !== undefined && !cfg.socketOwner!.includes(':') ? { ...owner, gid: socketAccess.gid } : owner;
      let maxBytes = DEFAULT_MEMORY_LIMITS.maxBytes;
      if (cfg.maxGuestMemory !== undefined) {
        const n = parseByteSize(cfg.maxGuestMemory);
        if (n === null || n < 2 ** 20 || n > DEFAULT_MEMORY_LIMITS.maxBytes) throw new UsageError(`--max-guest-memory '${cfg.maxGuestMemory}' is not a size from 1M to ${formatBytes(DEFAULT_MEMORY_LIMITS.maxBytes)} (e.g. 64G)`, hint);
        maxBytes = n;
      }
      if (cfg.maxMemRegions !== undefined && cfg.maxMemRegions > MAX_REGIONS) throw new UsageError(`maxMemRegions ${cfg.maxMemRegions} is more than ${MAX_REGIONS}`, hint);
      const memoryLimits = { maxBytes, maxRegions: cfg.maxMemRegions ?? MAX_REGIONS };
      // The control socket is root's unless delegated: --socket-mode is for ports only.
      const controlAccess = cfg.controlGroup !== undefined ? { mode: 0o660, gid: resolveGroup(String(cfg.controlGroup), '--control-group') } : { mode: 0o600 };
      server = new VhostUserServer({
        ...(defaultOwner ? { defaultOwner } : {}), memoryLimits,
        sockets: [], queuePairs: cfg.queues, poll: cfg.poll, log,
        mode: cfg.mode, socketAccess, allowUnsealedMemory: cfg.allowUnsealedMemory, offloads: cfg.offloads, uplinkTx: cfg.uplinkTx,
        ...(cfg.uplink && 'bridge' in cfg.uplink ? { bridge: cfg.uplink.bridge } : {}), ...(cfg.uplink && 'device' in cfg.uplink ? { uplink: cfg.uplink.device } : {}),
      });
      // Subscribed before start: the first port-added events are printed too.
      if (flags.events) server.events.on((e) => process.stdout.write(encodeLine(e)));
      if (logger.enabled('debug')) server.events.on((e) => log(`event ${JSON.stringify(e)}`, 'debug'));
      await server.start();
      for (const p of cfg.ports) await server.addPort({ socket: p.socket, client: p.client ?? false, ...(p.mode ? { mode: p.mode } : {}), ...(p.owner ? { owner: p.owner } : {}) });
      if (cfg.control) {
        const sw = server;
        const save = configFile ? async (): Promise<{ file: string; ports: number }> => {
          const ports = await sw.list();
          saveSwitchConfig(configFile, settingsToFile(cfg, ports, defaultOwner ?? { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 }));
          log(`saved ${ports.length} port(s) to ${configFile}`);
          return { file: configFile, ports: ports.length };
        } : undefined;
        control = new ControlServer(server, (m) => log(m, 'warn'), { maxTenantPorts: cfg.maxPortsPerUser ?? DEFAULT_MAX_TENANT_PORTS, ...(save ? { save } : {}) });
        await control.start(cfg.control, controlAccess);
      }
      if (cfg.metrics) {
        const sw = server;
        metrics = await serveMetrics(cfg.metrics, async () => render(switchFamilies(parseList(await sw.snapshot()))), (m) => log(m, 'warn'), socketAccess);
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
    log(`serving ${cfg.ports.length} port(s), ${cfg.queues} queue pair(s) each, ${cfg.poll} mode, ${cfg.mode}, offloads ${cfg.offloads ? 'on' : 'off'}${cfg.control ? `, control ${cfg.control}` : ''}, data path: ${fastPathStatus === 'native' ? 'native fast path + TypeScript' : `TypeScript only, fast path ${fastPathStatus}`}`);
    const timer = cfg.statsInterval > 0
      ? setInterval(() => { void s.snapshot().then((v) => { for (const l of statsLines(parseList(v))) log(l); }); }, cfg.statsInterval * 1000)
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
