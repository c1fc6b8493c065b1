import { fromHex, toHex } from "../bytes.ts";
import { WrongKeyError } from "../errors.ts";
import { KEY_BYTES } from "./keys.ts";

/**
 * The recovery key: the 256-bit root key as 64 hex digits (as WhatsApp shows it) followed by 4 hex
 * check digits, shown in 17 groups of 4. The check is CRC-16/XMODEM over the 32 key bytes; a CRC
 * of degree 16 detects every error burst of at most 16 bits, so any single mistyped digit (a
 * 4-bit burst) and any swap of two neighbouring digits (an 8-bit burst), anywhere in the 68 digits,
 * is always caught. SPEC.md "Recovery key" explains the choice.
 */

/** Number of hex digits in a recovery key, check digits included. */
export const RECOVERY_KEY_DIGITS = 68;

/** CRC-16/XMODEM (poly 0x1021, init 0, no reflection, no final xor). Check value of "123456789": 0x31c3. */
export function crc16xmodem(data: Uint8Array): number {
  let crc = 0;
  for (let i = 0; i < data.length; i++) {
    crc ^= data[i] << 8;
    for (let b = 0; b < 8; b++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/**
 * Formats a root key as a recovery key: `xxxx xxxx … xxxx` (17 groups of 4 lowercase hex digits).
 * @throws {RangeError} when `rootKey` is not 32 bytes.
 */
export function formatRecoveryKey(rootKey: Uint8Array): string {
  if (rootKey.length !== KEY_BYTES) {
    throw new RangeError(`root key: expected ${KEY_BYTES} bytes, got ${rootKey.length}`);
  }
  const digits = toHex(rootKey) + crc16xmodem(rootKey).toString(16).padStart(4, "0");
  return digits.match(/.{4}/g)!.join(" ");
}

/**
 * Parses a recovery key typed by a person: case-insensitive, with any spaces, hyphens or line
 * breaks between digits.
 * @throws {WrongKeyError} when the text is not 68 hex digits or the check digits do not match.
 */
export function parseRecoveryKey(text: string): Uint8Array {
  const digits = text.replace(/[ \t\r\n-]/g, "").toLowerCase();
  if (!/^[0-9a-f]*$/.test(digits)) {
    const bad = digits.match(/[^0-9a-f]/)![0];
    throw new WrongKeyError(
      `recovery key: unexpected character ${JSON.stringify(bad)}; expected hex digits 0-9 and a-f`,
    );
  }
  if (digits.length !== RECOVERY_KEY_DIGITS) {
    throw new WrongKeyError(
      `recovery key: expected ${RECOVERY_KEY_DIGITS} hex digits, got ${digits.length}`,
    );
  }
  const key = fromHex(digits.slice(0, 64));
  const check = Number.parseInt(digits.slice(64), 16);
  if (crc16xmodem(key) !== check) {
    throw new WrongKeyError("recovery key: check digits do not match; look for a typo");
  }
  return key;
}
