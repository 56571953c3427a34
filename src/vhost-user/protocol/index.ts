// Public surface of the vhost-user protocol codec (pure: no I/O, no fd closing).
export * from './messages.js';
export type * from './types.js';
export { checkFlags, decodeHeader, decodeRequest, requestFds, type Direction, type Header } from './codec.js';
export {
  encodeAck, encodeConfigErrorReply, encodeConfigReply, encodeReply, encodeU64Reply, encodeVringStateReply,
} from './replies.js';
export { MessageReader, type RawMessage } from './reader.js';
export { NATIVE_LE, U64_MAX } from './wire.js';
