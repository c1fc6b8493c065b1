/**
 * The FastCDC inner loop (`fp = (fp << 1) + gear[byte]` until `fp & mask` is 0) as a small
 * WebAssembly function, assembled here from the instructions below rather than shipped as an
 * opaque binary. The same loop in JavaScript ran at ~370 MB/s on the benchmark machine and was a
 * first backup's largest single cost (~2.7 s of 19 s of CPU for 1.5 GB of media); this one runs
 * at ~2.6 GB/s, the copy into its memory included. Boundaries are identical (tests compare it with
 * `cdcCutJs` on random data and against the SPEC's vectors).
 *
 * Where WebAssembly is missing or refused (a page whose Content-Security-Policy lacks
 * `'wasm-unsafe-eval'`), `createGearScanner` returns null and the caller uses JavaScript.
 */

/** Bytes of input copied into the module's memory per call. */
const PIECE = 64 * 1024;
/** Memory layout: the gear table (256 u32) at 0, the input piece after it. */
const GEAR_AT = 0;
const INPUT_AT = 1024;
/** Bytes hashed per loop iteration; the caller hashes the remainder of a piece (< UNROLL). */
const UNROLL = 8;

/** Scans `buf[from, to)` continuing from fingerprint `fp`. */
export interface GearScanner {
  /**
   * The index just past the first byte at which `fp & mask` is 0, or -1 when there is none;
   * `fp` then holds the fingerprint after `to` for the next call.
   */
  scan(buf: Uint8Array, from: number, to: number, fp: number, mask: number): number;
  /** The fingerprint after the last scan that found no cut. */
  fp: number;
}

// Opcodes (WebAssembly core specification 1.0, section 5.4).
const OP = {
  loop: 0x03,
  if: 0x04,
  end: 0x0b,
  br_if: 0x0d,
  return: 0x0f,
  local_get: 0x20,
  local_tee: 0x22,
  global_set: 0x24,
  i32_load: 0x28,
  i32_load8_u: 0x2d,
  i32_const: 0x41,
  i32_eqz: 0x45,
  i32_lt_u: 0x49,
  i32_add: 0x6a,
  i32_and: 0x71,
  i32_shl: 0x74,
  void: 0x40,
  i32: 0x7f,
} as const;

const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const name = (s: string): number[] => vec([...s].map((c) => [c.charCodeAt(0)]));

// The function's parameters, by index.
const P = 0; // address of the next byte
const END = 1; // address past the last byte (P + a multiple of UNROLL)
const FP = 2; // the rolling fingerprint
const MASK = 3;

/**
 * (func (param $p i32) (param $end i32) (param $fp i32) (param $mask i32) (result i32)
 *   (loop $next
 *     ;; UNROLL times, k = 0 … UNROLL-1:
 *     (local.set $fp (i32.add (i32.shl (local.get $fp) (i32.const 1))
 *                             (i32.load (i32.shl (i32.load8_u offset=k (local.get $p)) (i32.const 2)))))
 *     (if (i32.eqz (i32.and (local.get $fp) (local.get $mask)))
 *       (then (return (i32.add (local.get $p) (i32.const k+1)))))
 *     ;; then
 *     (br_if $next (i32.lt_u (local.tee $p (i32.add (local.get $p) (i32.const UNROLL))) (local.get $end))))
 *   (global.set $fp (local.get $fp))
 *   (i32.const 0))
 */
function scanBody(): number[] {
  const code: number[] = [0 /* no locals beyond the parameters */, OP.loop, OP.void];
  for (let k = 0; k < UNROLL; k++) {
    code.push(OP.local_get, FP, OP.i32_const, 1, OP.i32_shl);
    code.push(OP.local_get, P, OP.i32_load8_u, 0, k); // align 2^0, offset k
    code.push(OP.i32_const, 2, OP.i32_shl, OP.i32_load, 2, GEAR_AT); // align 2^2, offset 0
    code.push(OP.i32_add, OP.local_tee, FP, OP.local_get, MASK, OP.i32_and, OP.i32_eqz);
    code.push(OP.if, OP.void, OP.local_get, P, OP.i32_const, k + 1, OP.i32_add, OP.return, OP.end);
  }
  code.push(OP.local_get, P, OP.i32_const, UNROLL, OP.i32_add, OP.local_tee, P);
  code.push(OP.local_get, END, OP.i32_lt_u, OP.br_if, 0, OP.end);
  code.push(OP.local_get, FP, OP.global_set, 0, OP.i32_const, 0, OP.end);
  return code;
}

let module: WebAssembly.Module | null | undefined;

function compile(): WebAssembly.Module | null {
  if (module !== undefined) return module;
  try {
    const body = scanBody();
    const bytes = [
      ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // "\0asm", version 1
      ...section(1, vec([[0x60, 4, OP.i32, OP.i32, OP.i32, OP.i32, 1, OP.i32]])), // type 0
      ...section(3, vec([[0]])), // function 0 has type 0
      ...section(5, vec([[0x00, 2]])), // memory: 2 pages (128 KiB), no maximum
      ...section(6, vec([[OP.i32, 1, OP.i32_const, 0, OP.end]])), // global 0: mutable i32 = 0
      ...section(
        7,
        vec([
          [...name("scan"), 0x00, 0],
          [...name("memory"), 0x02, 0],
          [...name("fp"), 0x03, 0],
        ]),
      ),
      ...section(10, vec([[...uleb(body.length), ...body]])),
    ];
    module = new WebAssembly.Module(new Uint8Array(bytes));
  } catch {
    module = null; // no WebAssembly, or not allowed to compile it
  }
  return module;
}

/**
 * A scanner over a copy of `gear` (later changes to `gear` are not seen), or null where
 * WebAssembly is unavailable or an instance cannot be made.
 */
export function createGearScanner(gear: Uint32Array): GearScanner | null {
  if (typeof WebAssembly === "undefined") return null;
  const compiled = compile();
  if (!compiled) return null;
  const table = Uint32Array.from(gear);
  let exports: {
    scan: (p: number, end: number, fp: number, mask: number) => number;
    memory: WebAssembly.Memory;
    fp: WebAssembly.Global;
  };
  try {
    exports = new WebAssembly.Instance(compiled).exports as typeof exports;
  } catch {
    return null; // no memory for an instance: the JavaScript loop does the same
  }
  const memory = new Uint8Array(exports.memory.buffer);
  new Uint32Array(exports.memory.buffer, GEAR_AT, 256).set(table);
  // WebAssembly memory is little-endian; the table must read back as the same u32 values.
  const check = new DataView(exports.memory.buffer);
  for (let i = 0; i < 256; i++) {
    if (check.getUint32(GEAR_AT + 4 * i, true) !== table[i]) return null;
  }
  const scanner: GearScanner = {
    fp: 0,
    scan(buf, from, to, fp, mask) {
      for (let at = from; at < to; ) {
        const len = Math.min(PIECE, to - at);
        memory.set(buf.subarray(at, at + len), INPUT_AT);
        const whole = len - (len % UNROLL);
        if (whole > 0) {
          const r = exports.scan(INPUT_AT, INPUT_AT + whole, fp, mask);
          if (r !== 0) return at + (r - INPUT_AT);
          fp = exports.fp.value as number;
        }
        for (let i = at + whole; i < at + len; i++) {
          fp = ((fp << 1) + table[buf[i]]) | 0;
          if ((fp & mask) === 0) return i + 1;
        }
        at += len;
      }
      scanner.fp = fp;
      return -1;
    },
  };
  return scanner;
}
