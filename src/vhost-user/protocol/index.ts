// Public surface of the vhost-user protocol codec (pure: no I/O, no fd closing).
export * from './messages.js';
export type * from './types.js';
export { decodeHeader, decodeRequest, requestFds } from './codec.js';
export {
  encodeAck, encodeConfigErrorReply, encodeConfigReply, encodeU64Reply, encodeVringStateReply,
} from './replies.js';
export { MessageReader, type RawMessage } from './reader.js';
export { NATIVE_LE } from './wire.js';
