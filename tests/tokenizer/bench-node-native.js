// bench-node-native.js: single-thread encode speed of a NATIVE tiktoken on the
// multilingual benchmark corpus (bench-corpus.js), the yardstick of issue 16
// on machines where Python has no `tiktoken` (the dev VM). The engine is npm
// `tiktoken-node` 0.0.7 (pinned in package-lock.json): napi bindings around
// the Rust crate tiktoken-rs 0.5.8, whose CoreBPE is tiktoken's Rust core
// (fancy-regex pretokenizer, byte-pair merge), shipped as a prebuilt
// x86_64-linux-gnu `.node` library built with rustc 1.75 -- native code, not
// WASM. It carries its own rank tables, so its ids are an independent check.
//
// Usage: node bench-node-native.js <r50k|cl100k> <corpus> <seconds> <expected-ids|->
// First encodes every document and compares its ids with <expected-ids> (one
// line of ids per document, reference.js expect-corpus --special, since
// tiktoken-node's `encode` allows special tokens); any difference fails.
// "-" skips the check (a later round of bench-multilingual.sh) but still
// encodes the corpus once as a warm-up.
// Then encodes the whole corpus, one `encode` call per document, until
// <seconds> of wall time have passed, and prints one line:
//   "node-native <encoding> <MB/s of thread CPU> <MB/s wall> <ids> <bytes> <passes>"
// (MB = 1e6 bytes). The CPU time is the main thread's own (schedstat, in ns),
// so node's GC helper threads are not counted, as kiln's bench counts only
// its encoding thread. The figure includes the bindings' cost of turning a JS
// string into UTF-8 and the ids into a JS array, as a Python figure includes
// str -> Rust and list creation.
'use strict';
const fs = require('fs');
const readline = require('readline');

const [kind, corpus, secondsArg, expected] = process.argv.slice(2);
if (!['r50k', 'cl100k'].includes(kind) || !corpus || !expected) {
  console.error('usage: node bench-node-native.js <r50k|cl100k> <corpus> <seconds> <expected-ids|->');
  process.exit(2);
}
const seconds = Number(secondsArg) || 5;
const { getEncoding } = require('tiktoken-node');

// Nanoseconds this thread has run on a CPU (first field of schedstat).
function threadCpuNs() {
  return Number(fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
}

// Encodes every document, compares its ids with the expected-ids file and
// exits on any difference; returns the id count.
async function check(enc, docs) {
  const lines = readline.createInterface({ input: fs.createReadStream(expected) });
  let i = 0, bad = 0, nids = 0;
  for await (const line of lines) {
    if (i >= docs.length) {
      console.error(`${expected}: more lines than the corpus has documents`);
      process.exit(1);
    }
    const got = enc.encode(docs[i]);
    const want = line.length ? line.split(' ').map(Number) : [];
    nids += got.length;
    if (got.length !== want.length || got.some((id, k) => id !== want[k])) {
      if (bad++ < 3) console.log(`MISMATCH document ${i}: ${got.length} ids, reference ${want.length}`);
    }
    i++;
  }
  if (i !== docs.length) {
    console.error(`${expected}: ${i} lines, the corpus has ${docs.length} documents`);
    process.exit(1);
  }
  if (bad) {
    console.error(`${bad} of ${docs.length} documents differ from ${expected}`);
    process.exit(1);
  }
  return nids;
}

async function main() {
  const raw = fs.readFileSync(corpus);
  const docs = raw.toString('utf8').split('\0');
  const enc = getEncoding(`${kind}_base`);
  let nids = 0;
  if (expected === '-') {
    for (const d of docs) nids += enc.encode(d).length; // warm-up only
  } else {
    nids = await check(enc, docs);
  }
  let passes = 0;
  const c0 = threadCpuNs();
  const t0 = process.hrtime.bigint();
  let elapsed;
  do {
    for (const d of docs) enc.encode(d);
    passes++;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  } while (elapsed < seconds);
  const cpu = (threadCpuNs() - c0) / 1e9;
  const mb = (raw.length * passes) / 1e6;
  console.log(`node-native ${kind}_base ${(mb / cpu).toFixed(2)} ${(mb / elapsed).toFixed(2)} ` +
              `${nids} ${raw.length} ${passes}`);
}

main();
