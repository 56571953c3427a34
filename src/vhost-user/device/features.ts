// What this back-end offers. Offloads (CSUM/TSO) are not offered: the host
// side may be a tap without a vnet header or another guest that did not
// negotiate them, and passing unverified checksums between the two would be
// wrong. Packed rings and IN_ORDER are not implemented, so not offered.
// LOG_ALL (live migration) is offered: with it on, the data path marks every
// page it writes in the front-end's dirty log (virtq/dirty-log.ts).
import { Feature, featureBit, ProtoFeature } from '../protocol/index.js';

const bits = (list: number[]): bigint => list.reduce((m, b) => m | featureBit(b), 0n);

export function offeredFeatures(queuePairs: number): bigint {
  const f: number[] = [
    Feature.MRG_RXBUF, Feature.STATUS, Feature.CTRL_VQ, Feature.GUEST_ANNOUNCE, Feature.MTU,
    Feature.NOTIFY_ON_EMPTY, Feature.ANY_LAYOUT, Feature.INDIRECT_DESC, Feature.EVENT_IDX, Feature.VERSION_1,
    Feature.PROTOCOL_FEATURES, Feature.LOG_ALL,
  ];
  if (queuePairs > 1) f.push(Feature.MQ);
  return bits(f);
}

export function offeredProtocolFeatures(): bigint {
  return bits([ProtoFeature.MQ, ProtoFeature.LOG_SHMFD, ProtoFeature.RARP, ProtoFeature.REPLY_ACK, ProtoFeature.NET_MTU,
    ProtoFeature.CONFIGURE_MEM_SLOTS, ProtoFeature.STATUS]);
}
