// The test helpers that read testpmd's output and write pcap files, on text
// and bytes as DPDK 22.11's testpmd prints and net_pcap reads them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pcapFile } from '../lib/pcap.js';
import { lastNicStats, parseTestpmd } from '../lib/testpmd.js';

const nic = (rx: number, bytes: number): string => `Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: ${rx}         RX-missed: 0          RX-bytes:  ${bytes}
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 0          TX-errors: 0          TX-bytes:  0

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
`;

// The csum engine prints checksum error counters between RX and TX.
const CSUM_FINAL = `
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 16             RX-dropped: 0             RX-total: 16
  Bad-ipcsum: 0              Bad-l4csum: 0             Bad-outer-l4csum: 0             
  Bad-outer-ipcsum: 0             
  TX-packets: 0              TX-dropped: 0             TX-total: 0
  ----------------------------------------------------------------------------

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  Bad-ipcsum: 0              Bad-l4csum: 0             Bad-outer-l4csum: 0             
  Bad-outer-ipcsum: 0             
  TX-packets: 16             TX-dropped: 2             TX-total: 18
  ----------------------------------------------------------------------------
`;

const IO_FINAL = `
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 5              RX-dropped: 1             RX-total: 6
  TX-packets: 7              TX-dropped: 0             TX-total: 7
  ----------------------------------------------------------------------------
`;

describe('testpmd output', () => {
  it('final counters of the csum engine (checksum error lines between RX and TX)', () => {
    assert.deepEqual(parseTestpmd(CSUM_FINAL).ports, [
      { port: 0, rxPackets: 16, rxDropped: 0, txPackets: 0, txDropped: 0 },
      { port: 1, rxPackets: 0, rxDropped: 0, txPackets: 16, txDropped: 2 },
    ]);
  });

  it('final counters of the other engines', () => {
    assert.deepEqual(parseTestpmd(IO_FINAL).ports, [{ port: 0, rxPackets: 5, rxDropped: 1, txPackets: 7, txDropped: 0 }]);
  });

  it('the last NIC statistics block wins; none printed yet is an empty list', () => {
    assert.deepEqual(lastNicStats(nic(16, 176864) + nic(32, 353728)), [{ port: 0, rxPackets: 32, rxBytes: 353728, txPackets: 0, txBytes: 0 }]);
    assert.deepEqual(lastNicStats('Port 0 is closed\n'), []);
  });
});

describe('pcap files', () => {
  it('header and records as libpcap writes them (little-endian, microseconds, Ethernet)', () => {
    const a = Buffer.from([1, 2, 3]);
    const b = Buffer.alloc(70000, 7); // above 64 KiB: the snaplen covers GSO frames
    const f = pcapFile([a, b]);
    assert.equal(f.length, 24 + 16 + 3 + 16 + 70000);
    assert.equal(f.readUInt32LE(0), 0xa1b2c3d4);
    assert.deepEqual([f.readUInt16LE(4), f.readUInt16LE(6)], [2, 4]);
    assert.ok(f.readUInt32LE(16) >= 70000);
    assert.equal(f.readUInt32LE(20), 1);
    assert.deepEqual([f.readUInt32LE(24 + 8), f.readUInt32LE(24 + 12)], [3, 3]);
    assert.deepEqual(f.subarray(40, 43), a);
    const r2 = 43;
    assert.equal(f.readUInt32LE(r2 + 4), 1, 'one microsecond apart');
    assert.deepEqual([f.readUInt32LE(r2 + 8), f.readUInt32LE(r2 + 12)], [70000, 70000]);
    assert.ok(f.subarray(r2 + 16).equals(b));
  });
});
