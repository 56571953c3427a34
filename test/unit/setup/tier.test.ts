// The setup tier: how each way in maps into its request, and the one order of
// a prepared setup (state directory, admit, reap, vet, draft, realize; journal
// as made, undo in reverse, record kept only when something could not be undone). The steps here are fakes standing for
// kernel objects a unit test cannot make; the e2e suites make real ones.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Caller } from '../../../src/access/caller.js';
import { AccessDeniedError, ConfigError, UsageError } from '../../../src/errors.js';
import { parseHelperArgs } from '../../../src/helper/args.js';
import { ENV, hostContext, type HostContext } from '../../../src/host/context.js';
import { parseNicSpec } from '../../../src/launch/nic-spec.js';
import { draftRecord } from '../../../src/lifecycle/record.js';
import { PreparedEndpoint, prepareEndpoint, type TierContext } from '../../../src/setup/endpoint.js';
import type { Choice } from '../../../src/policy/choose.js';
import { modeOf } from '../../../src/policy/mode.js';
import { helperRequest, nicRequest, transportsFor, upRequest } from '../../../src/setup/request.js';
import { PreparedSetup, prepareSetup, type SetupDraft } from '../../../src/setup/tier.js';
import { ownNetns } from '../../../src/lifecycle/holders.js';
import { listEndpoints, loadEndpoint, releasedTombstone, saveEndpoint } from '../../../src/state/endpoints.js';
import type { OwnerRef } from '../../../src/state/owner.js';

const qemu = { pid: 4242, startTime: '99' };

describe('setup requests: every way in maps into one', () => {
  it('the helper: --br names a profile that may exist; --profile one that must', () => {
    const plain = helperRequest(parseHelperArgs(['--fd=3', '--br=br7']), ['tap', 'macvtap'], null);
    assert.deepEqual(plain.profile, { name: 'br7', required: false });
    assert.equal(plain.lifetime, 'fd');
    assert.equal(plain.profileNarrows, true);
    const named = helperRequest(parseHelperArgs(['--fd=3', '--br=br7', '--profile=lan']), ['vhost-user'], qemu, 77);
    assert.deepEqual(named.profile, { name: 'lan', required: true });
    assert.equal(named.lifetime, 'owner');
    assert.deepEqual(named.owner, qemu);
    assert.equal(named.fallbackOwnerPid, 77);
    assert.deepEqual(named.protocols, ['vhost-user']);
    assert.equal(helperRequest(parseHelperArgs(['--fd=3']), ['tap'], null).profile, undefined, 'no --br: no profile by name');
  });
  it('up: persistent, tap or macvtap unless a transport is named, its id kept', () => {
    const r = upRequest({ mode: 'vepa', dev: 'eth1', id: 'vm1' });
    assert.equal(r.lifetime, 'manual');
    assert.deepEqual(r.protocols, ['tap', 'macvtap']);
    assert.equal(r.flags.useVnet, true);
    assert.equal(r.flags.bridge, 'eth1');
    assert.equal(r.flags.mode, 'vepa');
    assert.equal(r.id, 'vm1');
    assert.equal(r.profile, undefined);
    assert.equal(r.profileNarrows, false);
    const p = upRequest({ profile: 'lan', transport: 'vhost-user', vnetHdr: false });
    assert.deepEqual(p.profile, { name: 'lan', required: true });
    assert.deepEqual(p.protocols, ['vhost-user']);
    assert.equal(p.flags.useVnet, false);
    assert.equal(p.flags.bridge, 'br0');
  });
  it('run: vhost= chooses the transports; br= never names a profile', () => {
    assert.deepEqual(transportsFor({ vhost: 'auto' }), ['vhost-kernel', 'tap', 'macvtap']);
    assert.deepEqual(transportsFor({ vhost: 'on' }), ['vhost-kernel']);
    assert.deepEqual(transportsFor({ vhost: 'off' }), ['tap', 'macvtap']);
    assert.deepEqual(transportsFor({ vhost: 'user' }), ['vhost-user']);
    const r = nicRequest(parseNicSpec('mode=bridge,br=br9,vhost=off', 0));
    assert.equal(r.profile, undefined);
    assert.equal(r.lifetime, 'run');
    assert.deepEqual(r.protocols, ['tap', 'macvtap']);
    assert.equal(r.flags.bridge, 'br9');
    const p = nicRequest(parseNicSpec('profile=lan', 1));
    assert.deepEqual(p.profile, { name: 'lan', required: true });
    assert.equal(p.naming.prefix, "--nic 'profile=lan': ");
  });
});

describe('prepared setup: journal, commit, undo', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-tier-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const owned = (n: number) => ({ backend: 'fake', obj: { kind: 'thing', data: { n } } });

  it('journals each owned step at once and undoes in reverse; a clean undo removes the record', () => {
    const order: string[] = [];
    const rec = draftRecord('bridge', null, 'tier-a');
    const s = new PreparedSetup(rec, dir);
    assert.equal(loadEndpoint(dir, 'tier-a'), null, 'nothing on disk before something outlives us');
    s.rb.add('one', () => { order.push('undo one'); }, owned(1));
    assert.deepEqual(loadEndpoint(dir, 'tier-a')!.owned, [owned(1)], 'journaled before the next step');
    s.rb.add('two', () => { order.push('undo two'); });
    s.rb.add('three', () => { order.push('undo three'); }, owned(3));
    assert.equal(loadEndpoint(dir, 'tier-a')!.owned.length, 2);
    assert.deepEqual(s.undo(), []);
    assert.deepEqual(order, ['undo three', 'undo two', 'undo one']);
    assert.equal(loadEndpoint(dir, 'tier-a'), null);
    assert.equal(s.status, 'undone');
    assert.throws(() => s.commit(true), /commit after it was undone/);
  });

  it('an undo that fails keeps the record (for gc) and the others still run', () => {
    const order: string[] = [];
    const s = new PreparedSetup(draftRecord('vepa', null, 'tier-b'), dir);
    s.rb.add('link', () => { order.push('link'); }, owned(1));
    s.rb.add('stuck', () => { throw new Error('busy'); }, owned(2));
    s.rb.add('fd', () => { order.push('fd'); });
    assert.deepEqual(s.undo(), ['stuck: busy']);
    assert.deepEqual(order, ['fd', 'link']);
    assert.equal(loadEndpoint(dir, 'tier-b')!.owned.length, 2);
  });

});

describe('prepareSetup: the one order of every way in', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-tier-order-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const host = (): HostContext => ({ stateDir: dir }) as HostContext;
  const draft = (id: string, over: Partial<SetupDraft> = {}): SetupDraft => ({ mode: 'vepa', id, owner: null, wanted: {}, saveNow: true, ...over });
  const owned = (n: number) => ({ backend: 'fake', obj: { kind: 'thing', data: { n } } });
  // This pid with another start time: an owner that has exited.
  const gone: OwnerRef = { pid: process.pid, startTime: '1' };
  const stale = (id: string): void => saveEndpoint(dir, { ...draftRecord('vepa', gone, id), lifetime: 'owner', info: { parent: 'eth1', state: 'active', netns: ownNetns() } });

  it('admit, then the reap of an exited owner\'s endpoint in the way, then vet, then the draft, then realize', () => {
    stale('old-eth1');
    const seen: string[] = [];
    const { setup, value } = prepareSetup(draft('new-eth1', { wanted: { dev: 'eth1' }, uid: 1000, lifetime: 'owner', transport: 'veth', info: { cni: { network: 'n' } } }), host(), {
      admit: () => { seen.push(`admit: old ${loadEndpoint(dir, 'old-eth1') ? 'there' : 'gone'}`); },
      vet: () => { seen.push(`vet: old ${loadEndpoint(dir, 'old-eth1') ? 'there' : 'gone'}, new ${loadEndpoint(dir, 'new-eth1') ? 'there' : 'not yet'}`); return 7; },
      realize: (s, vetted) => { seen.push(`realize: new ${loadEndpoint(dir, 'new-eth1') ? 'there' : 'not yet'}`); return vetted * 6; },
    });
    assert.deepEqual(seen, ['admit: old there', 'vet: old gone, new not yet', 'realize: new there']);
    assert.equal(value, 42, "vet's findings reach realize");
    const rec = loadEndpoint(dir, 'new-eth1')!;
    assert.equal(rec.mode, 'vepa');
    assert.equal(rec.uid, 1000);
    assert.equal(rec.lifetime, 'owner');
    assert.equal(rec.transport, 'veth');
    assert.equal(rec.owner, null);
    assert.deepEqual(rec.info.cni, { network: 'n' });
    assert.equal(rec.info.state, 'setting-up');
    assert.ok(releasedTombstone(dir, 'old-eth1'), 'released the way down does');
    setup.commit(false);
  });

  it('a refusal in admit or vet makes nothing, and an admit refusal reaps nothing', () => {
    stale('old-eth2');
    assert.throws(() => prepareSetup(draft('x-admit', { wanted: { dev: 'eth1' } }), host(), { admit: () => { throw new UsageError('no'); }, vet: () => undefined, realize: () => assert.fail('realized') }), UsageError);
    assert.ok(loadEndpoint(dir, 'old-eth2'), 'refused before the reap');
    assert.throws(() => prepareSetup(draft('x-vet', { wanted: { dev: 'eth1' } }), host(), { vet: () => { throw new UsageError('taken'); }, realize: () => assert.fail('realized') }), UsageError);
    assert.equal(loadEndpoint(dir, 'old-eth2'), null, 'reaped before vet');
    assert.equal(loadEndpoint(dir, 'x-admit'), null);
    assert.equal(loadEndpoint(dir, 'x-vet'), null);
  });

  it('a failed realize undoes in reverse, the first step (IPAM) last, and removes the record', () => {
    const order: string[] = [];
    let left: string[] | null = null;
    assert.throws(() => prepareSetup(draft('x-undo'), host(), {
      vet: () => undefined,
      realize: (s) => {
        s.rb.add('IPAM DEL', () => { order.push('ipam'); });
        s.rb.add('veth', () => { order.push('veth'); }, owned(1));
        s.rb.add('addresses', () => { order.push('addresses'); });
        throw new UsageError('attach failed');
      },
      undoLeft: (l) => { left = l; },
    }), (e: unknown) => e instanceof UsageError && e.message === 'attach failed');
    assert.deepEqual(order, ['addresses', 'veth', 'ipam']);
    assert.equal(left, null, 'told nothing when all was undone');
    assert.equal(loadEndpoint(dir, 'x-undo'), null);
  });

  it('an undo that fails is reported and keeps the record, with what it owns, for gc or DEL', () => {
    let left: string[] = [];
    const order: string[] = [];
    assert.throws(() => prepareSetup(draft('x-stuck'), host(), {
      vet: () => undefined,
      realize: (s) => {
        s.rb.add('IPAM DEL', () => { order.push('ipam'); });
        s.rb.add('link', () => { throw new Error('busy'); }, owned(2));
        throw new UsageError('later step failed');
      },
      undoLeft: (l) => { left = l; },
    }), UsageError);
    assert.deepEqual(left, ['link: busy']);
    assert.deepEqual(order, ['ipam'], 'the other undos still ran');
    assert.deepEqual(loadEndpoint(dir, 'x-stuck')!.owned, [owned(2)]);
  });

  it('the state directory is checked first: one writable by others refuses before anything', () => {
    const bad = join(dir, 'open');
    mkdirSync(bad, { mode: 0o777 });
    chmodSync(bad, 0o777);
    assert.throws(() => prepareSetup(draft('x-dir'), { stateDir: bad } as HostContext, { admit: () => assert.fail('admitted'), vet: () => undefined, realize: () => undefined }),
      (e: unknown) => e instanceof ConfigError && /writable by group or others/.test(e.message));
  });

  it('commit forgets the undo; keep saves the record as completed, else it stays as drafted', () => {
    let undone = false;
    const { setup } = prepareSetup(draft('tier-d', { saveNow: false }), host(), { vet: () => undefined, realize: (s) => { s.rb.add('tap fd', () => { undone = true; }); } });
    assert.equal(loadEndpoint(dir, 'tier-d'), null, 'not saved before something outlives us');
    setup.record.ifname = 'tap9';
    setup.commit(true);
    assert.equal(undone, false);
    assert.equal(loadEndpoint(dir, 'tier-d')!.ifname, 'tap9');
    assert.throws(() => setup.undo(), /undo after it was committed/);
    const other = prepareSetup(draft('tier-e', { saveNow: false }), host(), { vet: () => undefined, realize: () => 1 }).setup;
    other.commit(false);
    assert.equal(loadEndpoint(dir, 'tier-e'), null);
  });
});

describe('prepareEndpoint: refusals come before anything is made', () => {
  let dir: string;
  let ctx: TierContext;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'qnh-tier-ep-'));
    mkdirSync(join(dir, 'config/profiles'), { recursive: true });
    writeFileSync(join(dir, 'acl'), 'deny all\n');
    ctx = { host: hostContext({ [ENV.stateDir]: join(dir, 'state') }, true, false), config: join(dir, 'config'), admission: null };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const records = (): number => (existsSync(join(dir, 'state/endpoints')) ? readdirSync(join(dir, 'state/endpoints')).length : 0);

  it("a missing profile is named the caller's way", () => {
    assert.throws(() => prepareEndpoint(nicRequest(parseNicSpec('mode=bridge,profile=nope', 0)), ctx),
      (e: unknown) => e instanceof ConfigError && e.message === `--nic 'mode=bridge,profile=nope': no profile 'nope' in ${ctx.config}/profiles` && e.hint === 'create it or drop profile=');
    assert.throws(() => prepareEndpoint(helperRequest(parseHelperArgs(['--fd=3', '--profile=nope']), ['tap'], null), ctx),
      (e: unknown) => e instanceof ConfigError && e.message === `no profile 'nope' in ${ctx.config}/profiles` && e.hint === 'create it or drop --profile');
    assert.equal(records(), 0);
  });
  it('an ACL refusal, a bad mode and a taken id leave no record', () => {
    const user = { ...ctx, admission: { acl: join(dir, 'acl'), caller: new Caller(1000, 1000, [], 1) } };
    assert.throws(() => prepareEndpoint(helperRequest(parseHelperArgs(['--fd=3', '--br=br7']), ['tap'], null), user), AccessDeniedError);
    assert.throws(() => prepareEndpoint(upRequest({ mode: 'teleport' }), ctx), (e: unknown) => e instanceof UsageError && /unknown mode 'teleport'/.test(e.message));
    assert.throws(() => prepareEndpoint(upRequest({ mode: 'bridge', id: '../x' }), ctx), (e: unknown) => e instanceof UsageError && /endpoint id '\.\.\/x' is not valid/.test(e.message));
    assert.equal(records(), 0);
    assert.deepEqual(listEndpoints(join(dir, 'state')), []);
  });
});

describe('prepared endpoint: what stays after commit', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-tier-commit-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));
  // A chosen candidate as realize returns it; no fds, since a unit test makes no tap.
  const choice = (): Choice => ({
    candidate: { kernel: 'macvtap', transport: 'macvtap' },
    endpoint: { kernel: 'macvtap', ifname: 'macvtap7', devicePath: '/dev/tap77', fds: [], vnetHdr: true, mac: '52:54:00:00:00:07', mtu: 1500, owned: [], info: { parent: 'eth1' } },
    transport: { transport: 'macvtap', fds: [], vnetHdrSize: 12, queues: 1, info: { chardev: '240:7' } },
    explain: [],
  } as Choice);
  const prepared = (id: string, owns: boolean, manual: boolean): PreparedEndpoint => {
    const { setup } = prepareSetup({ mode: 'vepa', id, owner: null, wanted: {}, saveNow: manual }, { stateDir: dir } as HostContext, {
      vet: () => undefined,
      realize: (s) => { s.rb.add('link', () => undefined, owns ? { backend: 'macvtap', obj: { kind: 'link', data: { ifname: 'macvtap7' } } } : undefined); },
    });
    return new PreparedEndpoint(modeOf('vepa'), choice(), setup, manual);
  };

  it('something outlives the fds: the record is completed, given its owner, and kept', () => {
    const qemu = { pid: 4242, startTime: '99' };
    assert.equal(prepared('ep-a', true, false).commit(qemu), true);
    const rec = loadEndpoint(dir, 'ep-a')!;
    assert.equal(rec.ifname, 'macvtap7');
    assert.equal(rec.devicePath, '/dev/tap77');
    assert.equal(rec.transport, 'macvtap');
    assert.deepEqual(rec.owner, qemu);
    assert.equal(rec.info.state, 'active');
  });
  it('nothing outlives the fds: no record; `up` keeps one regardless', () => {
    assert.equal(prepared('ep-b', false, false).commit(), false);
    assert.equal(loadEndpoint(dir, 'ep-b'), null);
    assert.equal(prepared('ep-c', false, true).commit(), true);
    assert.equal(loadEndpoint(dir, 'ep-c')!.info.state, 'active');
  });
  it('undo before commit leaves nothing', () => {
    const p = prepared('ep-d', true, false);
    assert.ok(loadEndpoint(dir, 'ep-d'), 'journaled');
    assert.deepEqual(p.undo(), []);
    assert.equal(loadEndpoint(dir, 'ep-d'), null);
  });
});
