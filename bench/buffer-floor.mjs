/**
 * The runtime's floor under every streaming pipeline's peak RSS: a loop that fills a new buffer,
 * keeps the last four (what a pipeline holds in flight) and drops the rest, yielding to the event
 * loop as a stream would. No stowage code runs. The peak above the start is the dead buffers V8
 * lets pile up before it collects them, which no library can change from inside someone else's
 * process (BENCHMARKS.md, "Peak RSS on Node 24").
 *
 *   node bench/buffer-floor.mjs [bufferBytes=1048576] [totalMiB=512]
 */
const size = Number(process.argv[2] ?? 1 << 20);
const total = Number(process.argv[3] ?? 512) * 2 ** 20;
const mib = (n) => (n / 2 ** 20).toFixed(0);

const start = process.memoryUsage().rss;
let peak = start;
const sample = () => {
  peak = Math.max(peak, process.memoryUsage().rss);
};
const timer = setInterval(sample, 5);
const held = [];
let n = 0;
for (let done = 0; done < total; done += size) {
  const buffer = Buffer.allocUnsafe(size);
  buffer.fill(n++ & 0xff);
  held.push(buffer);
  if (held.length > 4) held.shift();
  if (n % 8 === 0) await new Promise((resolve) => setImmediate(resolve));
}
clearInterval(timer);
sample();
console.log(
  `node ${process.version}: ${size} B buffers, ${mib(total)} MiB in all, 4 held: RSS ${mib(start)} MiB at the start, peak ${mib(peak)} MiB`,
);
