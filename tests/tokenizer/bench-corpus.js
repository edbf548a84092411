// bench-corpus.js: builds the multilingual benchmark corpus for the tokenizer
// (bpe_tool bench, bench-ref.js --corpus): many short documents in the mix of
// the held-out corpus of issue 16 — Chinese, German, Russian, Spanish,
// Italian, Polish, Czech, Bulgarian and English prose, emoji and C code.
// The text is real: the translated messages of the system's gettext catalogs
// (/usr/share/locale/<lang>/LC_MESSAGES/*.mo, English = their msgids) and
// kiln's own C sources. Deterministic for a given machine (sorted files, a
// fixed PRNG seed); the figures in docs/ name the corpus's size and SHA-256.
//
// Usage: node bench-corpus.js <out-file> [source-dir]
// Output: documents separated by one NUL byte (no document holds a NUL), all
// valid UTF-8 (tiktoken takes strings only).
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const out = process.argv[2];
const src = process.argv[3] || path.resolve(__dirname, '../..');
if (!out) {
  console.error('usage: node bench-corpus.js <out-file> [source-dir]');
  process.exit(2);
}

const LOCALE = '/usr/share/locale';
const SHARE = 1_700_000; // bytes per language (about 16.7 MB in all)
const utf8 = new TextDecoder('utf-8', { fatal: true });

let seed = 0x2545f491;
function rand() { // xorshift32: the same documents on every run
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
}

// GNU .mo: magic, revision, N, offset of original table, offset of translations.
function readMo(file) {
  const b = fs.readFileSync(file);
  if (b.length < 28) return [];
  let rd;
  if (b.readUInt32LE(0) === 0x950412de) rd = (o) => b.readUInt32LE(o);
  else if (b.readUInt32BE(0) === 0x950412de) rd = (o) => b.readUInt32BE(o);
  else return [];
  const n = rd(8), oo = rd(12), to = rd(16);
  const pairs = [];
  for (let i = 0; i < n; i++) {
    const ol = rd(oo + 8 * i), oa = rd(oo + 8 * i + 4);
    const tl = rd(to + 8 * i), ta = rd(to + 8 * i + 4);
    if (oa + ol > b.length || ta + tl > b.length || ol === 0) continue; // header
    try {
      const id = utf8.decode(b.subarray(oa, oa + ol));
      const str = utf8.decode(b.subarray(ta, ta + tl));
      pairs.push([id.split('\0')[0], str.split('\0')]);
    } catch (e) { /* a catalog in another charset: skip the entry */ }
  }
  return pairs;
}

function catalogs(lang) {
  const dir = path.join(LOCALE, lang, 'LC_MESSAGES');
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => f.endsWith('.mo')).sort().map((f) => path.join(dir, f));
}

// Groups strings into documents of 30..330 bytes and a little over (mean about 200).
function toDocs(strings, budget) {
  const docs = [];
  let cur = [], len = 0, target = 30 + Math.floor(rand() * 300), used = 0;
  for (const s0 of strings) {
    const s = s0.replace(/\0/g, '');
    if (!s.trim()) continue;
    cur.push(s);
    len += Buffer.byteLength(s) + 1;
    if (len >= target) {
      const d = cur.join(rand() < 0.5 ? '\n' : ' ');
      docs.push(d);
      used += Buffer.byteLength(d);
      cur = []; len = 0; target = 30 + Math.floor(rand() * 300);
      if (used >= budget) break;
    }
  }
  return docs;
}

const docs = [];
const summary = [];
function addDocs(name, list) {
  const bytes = list.reduce((n, d) => n + Buffer.byteLength(d), 0);
  summary.push(`${name} ${list.length} docs ${bytes} B`);
  for (const d of list) docs.push(d);
}

const english = [];
for (const lang of ['zh_CN', 'de', 'ru', 'es', 'it', 'pl', 'cs', 'bg']) {
  const strings = [];
  for (const f of catalogs(lang)) {
    for (const [id, strs] of readMo(f)) {
      for (const s of strs) if (s && s !== id) strings.push(s);
      if (lang === 'de') english.push(id); // each msgid once
    }
  }
  addDocs(lang, toDocs(strings, SHARE));
}
addDocs('en', toDocs(english, SHARE));

// C code: kiln's own sources, in chunks of whole lines.
const code = [];
(function walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name < b.name ? -1 : 1)) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (/\.[ch]$/.test(e.name) && !e.name.startsWith('bpe.c')) code.push(...fs.readFileSync(p, 'utf8').split('\n'));
  }
})(path.join(src, 'lib'));
addDocs('code', toDocs(code, SHARE / 2));

// Emoji: chat-like lines mixing emoji sequences with words.
const EMOJI = ['😀', '😂', '🥲', '❤️', '👍🏽', '🙏', '🔥', '🎉', '👨‍👩‍👧‍👦', '🇩🇪', '🇨🇳', '🇵🇱', '✅', '🤔', '💯', '🚀', '☕', '🌍', '🙈', '👩🏻‍💻'];
const WORDS = ['ok', 'lol', 'great', 'danke', 'спасибо', 'gracias', 'grazie', 'dziękuję', 'děkuji', 'благодаря', '谢谢', 'see you', 'wow', 'yes!!', 'no way', 'haha', 'tomorrow 9:30', 'kiln'];
const emoji = [];
for (let i = 0; i < 8000; i++) {
  const parts = [];
  const n = 2 + Math.floor(rand() * 10);
  for (let k = 0; k < n; k++) {
    const e = EMOJI[Math.floor(rand() * EMOJI.length)];
    parts.push(rand() < 0.5 ? e : WORDS[Math.floor(rand() * WORDS.length)] + (rand() < 0.5 ? ' ' + e : e + e));
  }
  emoji.push(parts.join(' '));
}
addDocs('emoji', toDocs(emoji, SHARE / 4));

if (docs.length < 1000) {
  console.error(`bench-corpus.js: only ${docs.length} documents (are /usr/share/locale catalogs installed?)`);
  process.exit(1);
}
// Interleave languages as a real stream would: a fixed shuffle.
for (let i = docs.length - 1; i > 0; i--) {
  const j = Math.floor(rand() * (i + 1));
  [docs[i], docs[j]] = [docs[j], docs[i]];
}
const buf = Buffer.from(docs.join('\0'));
fs.writeFileSync(out + '.tmp', buf);
fs.renameSync(out + '.tmp', out);
const sha = crypto.createHash('sha256').update(buf).digest('hex');
console.log(`wrote ${out}: ${docs.length} documents, ${buf.length} bytes, sha256 ${sha}`);
for (const s of summary) console.log('  ' + s);
