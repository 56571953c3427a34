// Link operations through the classic SIOC* ioctls. They are one syscall each
// (~µs) with no extra module to load, which keeps the helper's start-up close
// to bare Node; richer operations (macvlan, veth, routes) live in src/net/.
import { c, check, SysError, O_CLOEXEC as SOCK_CLOEXEC } from './libc.js';
import { AF_UNIX } from './unix-fd.js';

const SOCK_DGRAM = 2;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCGIFMTU = 0x8921;
const SIOCSIFMTU = 0x8922;
const SIOCSIFHWADDR = 0x8924;
const SIOCGIFHWADDR = 0x8927;
const SIOCGIFINDEX = 0x8933;
const SIOCBRADDIF = 0x89a2;
const IFF_UP = 0x1;
const ARPHRD_ETHER = 1;

let ctl = -1;
// Any socket works for these ioctls; AF_UNIX avoids depending on IPv4 being
// enabled in the namespace.
function ctlSock(): number {
  if (ctl < 0) ctl = check(c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), 'socket');
  return ctl;
}

function req(name: string): Buffer {
  const r = Buffer.alloc(40);
  r.write(name, 0, 15, 'latin1');
  return r;
}

function ioctl(name: string, op: number, r: Buffer, what: string): void {
  check(c.ioctlPtr(ctlSock(), op, r), 'ioctl', `${what} ${name}`);
}

/** ifindex, or 0 when no such interface exists in this namespace. */
export function ifIndex(name: string): number {
  const r = req(name);
  try {
    ioctl(name, SIOCGIFINDEX, r, 'SIOCGIFINDEX');
  } catch (e) {
    if (e instanceof SysError && e.code === 'ENODEV') return 0;
    throw e;
  }
  return r.readInt32LE(16);
}

export function getMtu(name: string): number {
  const r = req(name);
  ioctl(name, SIOCGIFMTU, r, 'SIOCGIFMTU');
  return r.readInt32LE(16);
}

export function setMtu(name: string, mtu: number): void {
  const r = req(name);
  r.writeInt32LE(mtu, 16);
  ioctl(name, SIOCSIFMTU, r, 'SIOCSIFMTU');
}

export function getMac(name: string): Buffer {
  const r = req(name);
  ioctl(name, SIOCGIFHWADDR, r, 'SIOCGIFHWADDR');
  return Buffer.from(r.subarray(18, 24));
}

export function setMac(name: string, mac: Uint8Array): void {
  const r = req(name);
  r.writeUInt16LE(ARPHRD_ETHER, 16);
  r.set(mac.subarray(0, 6), 18);
  ioctl(name, SIOCSIFHWADDR, r, 'SIOCSIFHWADDR');
}

export function setUp(name: string, up = true): void {
  const r = req(name);
  ioctl(name, SIOCGIFFLAGS, r, 'SIOCGIFFLAGS');
  const flags = r.readUInt16LE(16);
  r.writeUInt16LE(up ? flags | IFF_UP : flags & ~IFF_UP, 16);
  ioctl(name, SIOCSIFFLAGS, r, 'SIOCSIFFLAGS');
}

/** Enslaves `port` to bridge `bridge`; EOPNOTSUPP/EINVAL mean `bridge` is no bridge. */
export function bridgeAddPort(bridge: string, port: string): void {
  const index = ifIndex(port);
  const r = req(bridge);
  r.writeInt32LE(index, 16);
  ioctl(bridge, SIOCBRADDIF, r, 'SIOCBRADDIF');
}
