// The switch's software offloads against the Linux kernel, no QEMU needed:
// a TCP sender in one namespace hands its tap (IFF_VNET_HDR, TUNSETOFFLOAD
// with checksum and TSO) real 64 KiB GSO frames and partial checksums; the
// relay (tap-relay-main.ts) segments and completes them with switch/gso.ts
// and writes plain frames into a tap in a second namespace, whose kernel
// verifies every IPv4/IPv6 and TCP checksum and reassembles the stream.
// Byte-exact over IPv4 and IPv6, with the relay counting GSO frames.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { withNetNs, type NetNs } from '../lib/netns.js';
import { until } from '../lib/wait.js';

const RELAY = fileURLToPath(new URL('../lib/tap-relay-main.js', import.meta.url));
const skip = process.getuid?.() !== 0 || !existsSync('/dev/net/tun') ? 'needs root and /dev/net/tun' : false;

// Receiver: one connection, prints its md5 and length. Sender: the file, then close.
const RECV = `const net=require('net'),c=require('crypto');const h=c.createHash('md5');let n=0;
const s=net.createServer((k)=>{k.on('data',(d)=>{h.update(d);n+=d.length;});k.on('end',()=>{console.log('GOT '+h.digest('hex')+' '+n);process.exit(0);});});
s.listen(Number(process.argv[2]),process.argv[1],()=>console.log('LISTENING'));`;
const SEND = `const net=require('net'),fs=require('fs');const k=net.connect(Number(process.argv[2]),process.argv[1],()=>{k.end(fs.readFileSync(process.argv[3]));});
k.on('close',(e)=>process.exit(e?1:0));k.on('error',(e)=>{console.error(e.message);process.exit(2);});`;

function lines(p: ReturnType<NetNs['spawn']>): string[] {
  const out: string[] = [];
  createInterface({ input: p.stdout! }).on('line', (l) => out.push(l));
  return out;
}

describe('software offloads against the kernel (tap with vnet header -> segmentation -> plain tap)', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-otap-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('Linux TSO frames over IPv4 and IPv6 arrive byte-exact after our segmentation; the kernel accepts every checksum', { timeout: 180_000 }, async (t) => {
    const data = randomBytes(8 << 20);
    const file = join(dir, 'data');
    writeFileSync(file, data);
    const want = `${createHash('md5').update(data).digest('hex')} ${data.length}`;
    await withNetNs(async (a) => withNetNs(async (b) => {
      const relay = a.spawn(process.execPath, [RELAY, 'qoin0', 'qoout0'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let err = '';
      relay.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
      const out = lines(relay);
      try {
        await until(() => out.some((l) => l.startsWith('READY')), 30_000, () => `relay start: ${err}`);
        a.ip('link', 'set', 'qoout0', 'netns', b.name);
        a.ip('addr', 'add', '10.6.0.1/24', 'dev', 'qoin0');
        a.ip('addr', 'add', 'fd06::1/64', 'dev', 'qoin0', 'nodad');
        a.ip('link', 'set', 'qoin0', 'up');
        b.ip('addr', 'add', '10.6.0.2/24', 'dev', 'qoout0');
        b.ip('addr', 'add', 'fd06::2/64', 'dev', 'qoout0', 'nodad');
        b.ip('link', 'set', 'qoout0', 'up');
        const offloads = a.exec('ethtool', '-k', 'qoin0');
        assert.match(offloads, /tcp-segmentation-offload: on/, 'the kernel sees a TSO device');
        for (const [addr, port] of [['10.6.0.2', '5001'], ['fd06::2', '5002']] as const) {
          const rx = b.spawn(process.execPath, ['-e', RECV, addr, port], { stdio: ['ignore', 'pipe', 'pipe'] });
          const got = lines(rx);
          await until(() => got.includes('LISTENING'), 30_000, () => 'receiver listening');
          const tx = a.spawn(process.execPath, ['-e', SEND, addr, port, file], { stdio: ['ignore', 'pipe', 'pipe'] });
          const code = await new Promise<number | null>((r) => tx.on('exit', r));
          assert.equal(code, 0, `sender to ${addr}`);
          await until(() => got.some((l) => l.startsWith('GOT')), 60_000, () => `receipt at ${addr}`);
          assert.equal(got.find((l) => l.startsWith('GOT')), `GOT ${want}`, `byte-exact over ${addr}`);
        }
      } finally {
        relay.kill('SIGTERM');
        await new Promise((r) => relay.on('exit', r));
      }
      const stats = JSON.parse(out.find((l) => l.startsWith('STATS'))!.slice(6)) as Record<string, number>;
      t.diagnostic(`relay: ${JSON.stringify(stats)}`);
      assert.ok(stats.gso! > 0 && stats.segments! > stats.gso!, 'the kernel sent TSO frames, we cut them');
      assert.ok(stats.maxFrame! > 1514, 'frames beyond the MTU came through the tap');
      assert.equal(stats.bad, 0, 'every kernel header passed our checks');
    }));
  });
});
