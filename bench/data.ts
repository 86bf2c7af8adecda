/**
 * Generated data that compresses like a real database dump (about 4:1 with `gzip -6`), not like
 * zeros or pgbench's filler (which compress 20-100:1 and make every compressor look fast).
 *
 * The shape is a PostgreSQL `COPY ... TO STDOUT` of an orders table: increasing ids, foreign
 * keys drawn from a skewed range, increasing timestamps with jitter, enum-like statuses, money
 * amounts, e-mail addresses, free-text comments from a Zipf-weighted vocabulary, a random hex
 * token (incompressible-ish, like hashes/UUIDs in real rows) and a small JSON column.
 *
 * Deterministic from a seed; written straight into Buffers (no string building) so it runs at
 * several hundred MB/s and does not dominate a benchmark.
 */
import { createWriteStream } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

const WORDS = (
  "the of and to in is was for on that with as by at from his her an be this which or had not are " +
  "but have were one all their they there been has when who will more no if out so said what up its " +
  "about into than them can only other new some could time these two may then do first any my now " +
  "such like our over man me even most made after also did many before must through back years where " +
  "much your way well down should because each just those people how too little state good very make " +
  "world still own see men work long get here between both life being under never day same another " +
  "know while last might us great old year off come since against go came right used take three " +
  "order invoice payment shipped pending delivered returned refund customer account address billing " +
  "warehouse carrier tracking priority express standard discount coupon subtotal tax total currency " +
  "quantity product catalog variant colour size small medium large extra blue red green black white " +
  "please call before delivery leave parcel at door gift wrap fragile handle with care backorder " +
  "restock supplier region north south east west central zone route driver vehicle depot scanned " +
  "label printed packed picked sorted loaded dispatched received signed damaged lost replacement " +
  "ticket support agent escalated resolved reopened closed note internal external review rating " +
  "excellent poor average late early missing wrong item charged twice subscription renewal trial " +
  "cancelled upgraded downgraded plan monthly annual invoice credit debit card bank transfer wallet"
)
  .split(" ")
  .map((w) => Buffer.from(w, "latin1"));

const STATUSES = ["pending", "paid", "shipped", "delivered", "returned", "cancelled", "refunded"].map((s) =>
  Buffer.from(s, "latin1"),
);
const DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "shop.example", "users.test"].map(
  (s) => Buffer.from(s, "latin1"),
);
const PATHS = ["/api/v1/orders/", "/api/v1/customers/", "/checkout/", "/cart/items/", "/account/"].map((s) =>
  Buffer.from(s, "latin1"),
);
const AGENTS = [
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X)",
  "curl/8.5.0",
  "okhttp/4.12.0",
].map((s) => Buffer.from(s, "latin1"));
const HEX = Buffer.from("0123456789abcdef", "latin1");
const ALPHA = Buffer.from("abcdefghijklmnopqrstuvwxyz", "latin1");

/** xorshift128+ on two 32-bit halves: fast, deterministic, good enough for test data. */
class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(seed: number) {
    this.a = seed | 0 || 1;
    this.b = 0x9e3779b9;
    this.c = 0x243f6a88;
    this.d = 0xb7e15162;
    for (let i = 0; i < 16; i++) this.next();
  }
  /** A uniform 32-bit unsigned integer (xoshiro128**). */
  next(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }
  below(n: number): number {
    return (this.next() % n) >>> 0;
  }
  /** Skewed towards small values: a rough Zipf for vocabulary and foreign keys. */
  skewed(n: number): number {
    const u = this.next() / 4294967296;
    return Math.floor(n * u * u * u);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Writes rows into fixed-size buffers; a row that does not fit continues in the next buffer. */
class RowWriter {
  private row = Buffer.allocUnsafe(4096);
  len = 0;
  bytes(b: Buffer): void {
    // Short copies by hand: Buffer#copy's fixed cost dominates for a few bytes.
    const row = this.row;
    let len = this.len;
    for (let i = 0; i < b.length; i++) row[len++] = b[i]!;
    this.len = len;
  }
  byte(c: number): void {
    this.row[this.len++] = c;
  }
  int(n: number): void {
    if (n === 0) {
      this.byte(48);
      return;
    }
    let digits = 0;
    for (let m = n; m > 0; m = Math.floor(m / 10)) digits++;
    let pos = this.len + digits;
    this.len = pos;
    for (let m = n; m > 0; m = Math.floor(m / 10)) this.row[--pos] = 48 + (m % 10);
  }
  pad2(n: number): void {
    this.byte(48 + Math.floor(n / 10));
    this.byte(48 + (n % 10));
  }
  take(): Buffer {
    const out = this.row.subarray(0, this.len);
    this.len = 0;
    return out;
  }
}

export interface DumpOptions {
  /** Exactly this many bytes are produced. */
  bytes: number;
  /** @default 1 */
  seed?: number;
  /** Size of the chunks yielded. @default 1 MiB */
  chunkSize?: number;
}

/** Yields `bytes` bytes of dump-like text in `chunkSize` chunks (fresh buffers each). */
export function* generateDump(options: DumpOptions): Generator<Buffer> {
  const { bytes, seed = 1, chunkSize = 1 << 20 } = options;
  const rng = new Rng(seed);
  const w = new RowWriter();
  let id = 1_000_000 + rng.below(1000);
  let time = Date.UTC(2026, 0, 1) / 1000;
  let remaining = bytes;
  let carry: Buffer | undefined;
  while (remaining > 0) {
    const out = Buffer.allocUnsafe(Math.min(chunkSize, remaining));
    let filled = 0;
    if (carry) {
      const n = Math.min(carry.length, out.length);
      carry.copy(out, 0, 0, n);
      filled = n;
      carry = n < carry.length ? carry.subarray(n) : undefined;
    }
    while (filled < out.length) {
      time += rng.below(4);
      writeRow(w, rng, id++, time);
      const row = w.take();
      const n = Math.min(row.length, out.length - filled);
      if (n === row.length) row.copy(out, filled);
      else row.copy(out, filled, 0, n);
      filled += n;
      if (n < row.length) carry = Buffer.from(row.subarray(n));
    }
    remaining -= out.length;
    yield out;
  }
}

function writeRow(w: RowWriter, rng: Rng, id: number, time: number): void {
  w.int(id);
  w.byte(9);
  w.int(10_000 + rng.skewed(500_000)); // customer id
  w.byte(9);
  w.bytes(minutePrefix(time));
  w.pad2(time % 60);
  w.byte(46);
  w.int(100 + rng.below(900)); // milliseconds
  w.bytes(PLUS00);
  w.byte(9);
  w.bytes(STATUSES[rng.skewed(STATUSES.length)]!);
  w.byte(9);
  w.int(rng.below(5000));
  w.byte(46);
  w.pad2(rng.below(100));
  w.byte(9);
  // e-mail: a random-ish local part and a domain
  const localLength = 5 + rng.below(8);
  for (let i = 0; i < localLength; i++) w.byte(ALPHA[rng.skewed(26)]!);
  if (rng.below(3) === 0) w.int(rng.below(100));
  w.byte(64);
  w.bytes(DOMAINS[rng.skewed(DOMAINS.length)]!);
  w.byte(9);
  // comment: 4-16 words from the vocabulary, Zipf-weighted
  const words = 4 + rng.below(13);
  for (let i = 0; i < words; i++) {
    if (i > 0) w.byte(32);
    w.bytes(WORDS[rng.skewed(WORDS.length)]!);
  }
  w.byte(9);
  // token: 8 random hex digits (hashes, UUID fragments and keys in real rows)
  for (let i = 0; i < 8; i++) w.byte(HEX[rng.below(16)]!);
  w.byte(9);
  // a small JSON column
  w.bytes(JSON_IP);
  w.int(rng.below(256));
  w.byte(46);
  w.int(rng.below(256));
  w.byte(46);
  w.int(rng.below(256));
  w.bytes(JSON_PATH);
  w.bytes(PATHS[rng.skewed(PATHS.length)]!);
  w.int(rng.skewed(1_000_000));
  w.bytes(JSON_UA);
  w.bytes(AGENTS[rng.skewed(AGENTS.length)]!);
  w.bytes(JSON_END);
  w.byte(10);
}

let cachedMinute = -1;
let cachedPrefix = Buffer.alloc(0);
/** "YYYY-MM-DD HH:MM:" for a time in seconds, rebuilt only when the minute changes. */
function minutePrefix(time: number): Buffer {
  const minute = Math.floor(time / 60);
  if (minute !== cachedMinute) {
    cachedMinute = minute;
    cachedPrefix = Buffer.from(`${new Date(minute * 60_000).toISOString().slice(0, 16).replace("T", " ")}:`);
  }
  return cachedPrefix;
}

const PLUS00 = Buffer.from("+00", "latin1");
const JSON_IP = Buffer.from('{"ip": "10.', "latin1");
const JSON_PATH = Buffer.from('", "path": "', "latin1");
const JSON_UA = Buffer.from('", "ua": "', "latin1");
const JSON_END = Buffer.from('"}', "latin1");

/** Writes a dump of `bytes` bytes to `path` in 1 MiB writes. */
export async function writeDumpFile(path: string, bytes: number, seed = 1): Promise<void> {
  await pipeline(
    Readable.from(generateDump({ bytes, seed }), { objectMode: false }),
    createWriteStream(path, { highWaterMark: 1 << 20 }),
  );
}
