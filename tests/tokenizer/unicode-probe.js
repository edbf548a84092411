// unicode-probe.js: every Unicode code point through the reference
// pre-tokenizer. tiktoken's regex classes (\p{L}, \p{N}, \s) come from Rust's
// Unicode tables, kiln's from utf8proc plus a fixed White_Space list; this
// makes their differences visible as token ids.
//
// For each block of code points X it writes a rank file (the 256 bytes, then
// "a"+X, "1"+X, "!"+X, " "+X as single tokens), a probe document ("aX\n1X\n!X\n X\n"
// for every X) and the ids npm `tiktoken` gives it with a custom Tiktoken
// (r50k or cl100k pattern). A token "aX" appears only when the pattern keeps
// "aX" as one piece, i.e. when X is a letter, and so on for the others.
// Usage: node unicode-probe.js <out-dir> [block-size]
//   -> <out-dir>/probe-<n>.tiktoken, probe-<n>.txt, expected-probe-<n>-<r50k|cl100k>.txt,
//      and a list of "<n> <rank-file> <expected-r50k> <expected-cl100k>" on stdout.
'use strict';
const fs = require('fs');
const path = require('path');
const { Tiktoken } = require('tiktoken/lite');

const out = process.argv[2];
const block = Number(process.argv[3] || 0x20000);
if (!out) {
  console.error('usage: node unicode-probe.js <out-dir> [block-size]');
  process.exit(2);
}
fs.mkdirSync(out, { recursive: true });
const r50k = require('tiktoken/encoders/r50k_base.json');
const cl100k = require('tiktoken/encoders/cl100k_base.json');

for (let lo = 0, n = 0; lo < 0x110000; lo += block, n++) {
  const toks = [];
  for (let c = 0; c < 256; c++) toks.push(Buffer.from([c]));
  const doc = [];
  for (let cp = lo; cp < Math.min(lo + block, 0x110000); cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const x = String.fromCodePoint(cp);
    for (const p of ['a', '1', '!', ' ']) {
      const t = Buffer.from(p + x);
      if (t.length > 1) toks.push(t);
      doc.push(p + x + '\n');
    }
  }
  const seen = new Set();
  const uniq = toks.filter((t) => { const k = t.toString('hex'); if (seen.has(k)) return false; seen.add(k); return true; });
  const b64 = uniq.map((t) => t.toString('base64'));
  const rankFile = path.join(out, `probe-${n}.tiktoken`);
  // the special-token line keeps kiln from assuming the standard special ids
  fs.writeFileSync(rankFile, b64.map((t, i) => `${t} ${i}\n`).join('') + `PHxlbmRvZnRleHR8Pg== ${b64.length}\n`);
  const docFile = path.join(out, `probe-${n}.txt`);
  const text = doc.join('');
  fs.writeFileSync(docFile, text);
  const exp = [];
  for (const [name, data] of [['r50k', r50k], ['cl100k', cl100k]]) {
    const enc = new Tiktoken('! 0 ' + b64.join(' '), {}, data.pat_str);
    const ids = enc.encode_ordinary(text);
    enc.free();
    const f = path.join(out, `expected-probe-${n}-${name}.txt`);
    fs.writeFileSync(f, `D ${Buffer.byteLength(text)} ${ids.length} ${path.resolve(docFile)}\n${Array.from(ids).join(' ')}\n`);
    exp.push(f);
  }
  console.log(`${n} ${rankFile} ${exp[0]} ${exp[1]}`);
}
