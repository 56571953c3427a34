// A request the device refuses: an error reply (REPLY_ACK) or, when fatal or
// unreportable, a closed connection; never an exception out of the connection.
export class DeviceError extends Error {
  /** Close the connection rather than reply with an error. */
  readonly fatal: boolean;
  constructor(message: string, fatal = false) {
    super(message);
    this.fatal = fatal;
  }
}
