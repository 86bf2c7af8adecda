/**
 * Compiled by `npm run typecheck`, never run: the library's own values fit its own options, as a
 * user's code would write them (a `Buffer` from `generateKey()` is a `Uint8Array<ArrayBufferLike>`).
 */
import { aes256gcm, generateKey, generateKeyPair, keyFingerprint } from "../../src/index.js";

const key = generateKey();
aes256gcm({ key });
aes256gcm({ key: key.toString("hex") });
aes256gcm({ recipients: [generateKeyPair().recipient] });
keyFingerprint(key);
export const keys = [{ key }, { identity: generateKeyPair().identity }];
