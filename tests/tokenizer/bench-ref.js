// bench-ref.js: single-thread encode speed of npm `tiktoken` (WASM build of
// tiktoken's Rust core) on the given documents, the reference figure that
// tests/bench/bench_bpe.c compares against.
// Usage: node bench-ref.js <r50k_base|cl100k_base> <seconds> <doc>...
//        node bench-ref.js <r50k_base|cl100k_base> <seconds> --corpus <file>
//        (the NUL-separated documents of tests/tokenizer/bench-corpus.js)
// Prints one line: "ref <encoding> <MB/s> <ids> <bytes> <sha256> <MB/s of CPU>"
// (MB = 1e6 bytes; the first MB/s is wall time, the last the main thread's
// CPU time, schedstat); sha256 is over, per document in order, its id count
// then its ids, each a little-endian u32: bench_bpe hashes its own ids the
// same way.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { get_encoding } = require('tiktoken');

const [encName, secondsArg, ...docs] = process.argv.slice(2);
if (!encName || !docs.length) {
  console.error('usage: node bench-ref.js <encoding> <seconds> <doc>...');
  process.exit(2);
}
const seconds = Number(secondsArg) || 3;
let texts, bytes;
if (docs[0] === '--corpus' && docs.length === 2) {
  const buf = fs.readFileSync(docs[1]);
  texts = buf.toString('utf8').split('\0');
  bytes = buf.length;
} else {
  texts = docs.map((d) => fs.readFileSync(d, 'utf8'));
  bytes = docs.reduce((n, d) => n + fs.statSync(d).size, 0);
}
const enc = get_encoding(encName);
let ids = 0;
const digest = crypto.createHash('sha256');
for (const t of texts) { // warm-up, and the ids' digest
  const v = enc.encode_ordinary(t);
  const n = Buffer.alloc(4);
  n.writeUInt32LE(v.length);
  digest.update(n);
  const le = Buffer.alloc(4 * v.length);
  v.forEach((id, i) => le.writeUInt32LE(id, 4 * i));
  digest.update(le);
  ids += v.length;
}
// Nanoseconds this thread has run on a CPU (first field of schedstat).
function threadCpuNs() {
  return Number(fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
}
let passes = 0;
const c0 = threadCpuNs();
const t0 = process.hrtime.bigint();
let elapsed = 0;
do {
  for (const t of texts) enc.encode_ordinary(t);
  passes++;
  elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
} while (elapsed < seconds);
const cpu = (threadCpuNs() - c0) / 1e9;
enc.free();
const mbps = ((bytes * passes) / 1e6 / elapsed).toFixed(2);
const cpuMbps = ((bytes * passes) / 1e6 / cpu).toFixed(2);
console.log(`ref ${encName} ${mbps} ${ids} ${bytes} ${digest.digest('hex')} ${cpuMbps}`);
