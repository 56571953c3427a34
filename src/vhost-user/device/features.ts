// What this back-end offers. Offloads (partial checksums, TCP segmentation
// and ECN, both directions) are offered unless turned off (`serve
// --offloads=off`): the switch passes a frame's header on to a receiver that
// negotiated the same offload and completes or segments it in software for
// any other (switch/offload.ts, switch/gso.ts). UFO is not offered: Linux
// has not sent UFO since 4.14 and a receiver without it would need IP
// fragmentation; USO needs QEMU 8.2. Packed rings and IN_ORDER are not
// implemented, so not offered.
// LOG_ALL (live migration) is offered: with it on, the data path marks every
// page it writes in the front-end's dirty log (virtq/dirty-log.ts).
import { Feature, featureBit, ProtoFeature } from '../protocol/index.js';

const bits = (list: number[]): bigint => list.reduce((m, b) => m | featureBit(b), 0n);

/** The offloads offered with --offloads=on. */
const OFFLOAD_FEATURES: readonly number[] = [
  Feature.CSUM, Feature.GUEST_CSUM, Feature.HOST_TSO4, Feature.HOST_TSO6, Feature.HOST_ECN,
  Feature.GUEST_TSO4, Feature.GUEST_TSO6, Feature.GUEST_ECN,
];

export function offeredFeatures(queuePairs: number, offloads = true): bigint {
  const f: number[] = [
    Feature.MRG_RXBUF, Feature.STATUS, Feature.CTRL_VQ, Feature.GUEST_ANNOUNCE, Feature.MTU,
    Feature.NOTIFY_ON_EMPTY, Feature.ANY_LAYOUT, Feature.INDIRECT_DESC, Feature.EVENT_IDX, Feature.VERSION_1,
    Feature.PROTOCOL_FEATURES, Feature.LOG_ALL,
  ];
  if (queuePairs > 1) f.push(Feature.MQ);
  if (offloads) f.push(...OFFLOAD_FEATURES);
  return bits(f);
}

export function offeredProtocolFeatures(): bigint {
  return bits([ProtoFeature.MQ, ProtoFeature.LOG_SHMFD, ProtoFeature.RARP, ProtoFeature.REPLY_ACK, ProtoFeature.NET_MTU,
    ProtoFeature.CONFIGURE_MEM_SLOTS, ProtoFeature.STATUS]);
}
