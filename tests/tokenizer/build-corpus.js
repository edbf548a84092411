// build-corpus.js: writes the multilingual parity corpus (deterministic, no
// randomness) used beside the Debian fortunes by bpe-parity.sh.
// Usage: node build-corpus.js <out-dir>   -> <out-dir>/multilingual.txt, edge-*.txt
// It aims at the pre-tokenizer's corners: Unicode letters/numbers/marks, odd
// spaces (White_Space vs not), \r\n, contractions in every case, digit runs,
// long pieces (the heap merge path) and emoji sequences.
'use strict';
const fs = require('fs');
const path = require('path');

const out = process.argv[2];
if (!out) {
  console.error('usage: node build-corpus.js <out-dir>');
  process.exit(2);
}
fs.mkdirSync(out, { recursive: true });

const parts = [];
const add = (s) => parts.push(s);

// Accents, precomposed and decomposed (combining marks are \p{M}, not \p{L}).
add('Café crème brûlée, naïve façade, Ångström, São Paulo, Łódź, Dvořák, Øresund.\n');
add('Cafe\u0301 cre\u0300me bru\u0302le\u0301e — e\u0301\u0301\u0301 a\u0308\u0304 Z\u0327\u0301\n');
add('Straße, STRASSE, ǅemal, ǈubljana, ǋaro; ﬁnance ﬂow (ligatures).\n');
// Greek, Cyrillic, Hebrew, Arabic (with harakat), Devanagari, Thai, Korean.
add('Ελληνικά: Η γρήγορη καφέ αλεπού. Русский: Съешь же ещё этих мягких французских булок.\n');
add('עברית: שלום עולם. العربية: مَرْحَبًا بِالعَالَم ١٢٣٤٥ ٦٧٨. हिन्दी: नमस्ते दुनिया १२३४.\n');
add('ไทย: สวัสดีชาวโลก ๑๒๓. 한국어: 안녕하세요 세계 ㄱㄴㄷ.\n');
// CJK, kana, full-width forms and ideographic space U+3000.
add('日本語：東京都は日本の首都です。ひらがな、カタカナ、ﾊﾝｶｸ。\u3000全角スペース\u3000\u3000二つ。\n');
add('中文：我们的祖国是花园，花园的花朵真鲜艳。１２３４５６７ ＡＢＣ ｄｅｆ 〇一二三 零壹贰叁。\n');
add('𠀀𠀁𪜀 CJK Ext B, 𫝀 Ext C/D, 〆 々 〻.\n');
// Emoji: ZWJ families, skin tones, flags, keycaps, variation selectors.
add('Emoji: 😀😃😄 👍🏻👍🏼👍🏽👍🏾👍🏿 👨‍👩‍👧‍👦 👩🏽‍💻 🏳️‍🌈 🇫🇷🇯🇵 1️⃣ #️⃣ ❤️ ✌︎ 🧑‍🤝‍🧑.\n');
add('hello😀world 😀hello 😀😀😀😀😀😀😀😀😀😀 a👍🏽b\n');
// Digits of many lengths and number-like characters (\p{N}: Nd, Nl, No).
let digits = '';
for (let n = 1; n <= 25; n++) digits += '1234567890123456789012345'.slice(0, n) + ' ';
add('Digits: ' + digits + '\n');
add('x1 x12 x123 x1234 3.14159 1,000,000 2024-01-02 0x1F ½ ¾ ² ³ Ⅻ ⅻ ① ⑳ ٣ ߁ ௧ 𝟙𝟚𝟛\n');
// Contractions, lower and upper case, and the long s (case folds to s).
add("I'm you're he's she'd we'll they've it'd don't can't won't isn't.\n");
add("I'M YOU'RE HE'S SHE'D WE'LL THEY'VE IT'D DON'T. You'Re We'Ll They'Ve I'M'S 'S 'sa 'x\n");
add("'ſ 'ſtuff rock'n'roll o'clock ''s '''t ' s ’s ‘quoted’ \"double\"\n");
// Whitespace: long runs, tabs, CR LF, lone CR, odd Unicode spaces.
add('a' + ' '.repeat(40) + 'b' + '\t'.repeat(9) + 'c \t d\t \te   \n');
add('line one\r\nline two\r\n\r\n\r\nline three\rcr only\n\n\n\n   \n  \t\n');
add('nbsp:\u00a0x\u00a0\u00a0y emsp:\u2003x\u2003\u2003y ideo:\u3000x thin:\u2009x narrow:\u202fx\n');
add('ogham:\u1680x mmsp:\u205fx nel:\u0085x ls:\u2028x ps:\u2029x vt:\u000bx ff:\u000cx\n');
add('not White_Space: zwsp\u200bx bom\ufeffx mvs\u180ex wj\u2060x zwnj\u200cx\n');
add('space before newline   \n\ttab before newline\t\n \u00a0\n\u3000\n end');
add('\n');
add('  leading spaces, trailing spaces   ');
add('\n');
// Punctuation runs, code, URLs, markup.
add('!!! ??? ... --- *** ### $$$ %%% &&& ((())) [[[]]] {{{}}} <<<>>> ~~~ ```\n');
add('int main(void) { return printf("%d\\n", a[i] >= b ? 1 : -1); } // x += 2;\n');
add('https://example.com/path?query=1&b=2#frag <a href="x">link</a> user@example.org\n');
add('<|endoftext|> <|fim_prefix|><|fim_middle|><|fim_suffix|> <|endofprompt|> <|unknown|>\n');
add('Mixed: naïve日本語mixed123ABCdef_ghi-jkl.mno, ÀÉÎÕÜ àéîõü 3rd 1st 2nd 10x\n');

fs.writeFileSync(path.join(out, 'multilingual.txt'), parts.join(''));

// Long pieces: exercise the heap merge (pieces over 64 bytes) and repeats.
const edge = [];
edge.push('a'.repeat(3000) + ' ' + 'ab'.repeat(700) + ' ' + 'abc'.repeat(333) + '\n');
edge.push('-'.repeat(500) + '=' .repeat(129) + ' ' + '!?'.repeat(300) + '\n');
edge.push(' '.repeat(1000) + 'x' + '\n'.repeat(300) + '\t'.repeat(200) + 'y\n');
edge.push('9'.repeat(1001) + ' ' + '0'.repeat(64) + '\n');
edge.push('Supercalifragilisticexpialidocious'.repeat(20) + '\n');
edge.push('日本語'.repeat(200) + ' ' + '😀'.repeat(100) + ' ' + 'é'.repeat(150) + '\n');
edge.push('antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis\n');
fs.writeFileSync(path.join(out, 'edge-long.txt'), edge.join(''));
