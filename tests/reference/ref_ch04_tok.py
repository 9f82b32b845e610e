#!/usr/bin/env python3
"""ref_ch04_tok.py: what HF `tokenizers` says about our tokenizer test corpus.

Writes, into OUT_DIR:
  tok_cases.json   {"tokenizer": PATH, "unicode": VERSION, "project_tokens": {name: id},
                    "cases": [{"text": s, "ids": [...], "decoded": d}, ...],
                    "decode": [{"ids": [...], "text": t, "text_skip": t2}, ...]}
                   ids = Tokenizer.from_file(PATH) (+ the project's four added tokens)
                   .encode(s, add_special_tokens=False).ids; decoded = .decode(ids,
                   skip_special_tokens=False); the "decode" cases are id lists chosen to
                   split multi-byte characters (U+FFFD), mix special tokens and unknown ids.
  tok_train_corpus.txt   text for the C BPE trainer (C writes trained_tokenizer.json
                   and trained_expected.json beside it; check_ch04_tok.py reads them).

The corpus is assembled here, deterministically (seeded): English prose, code, numbers,
contractions in every case, whitespace runs and CRLF, CJK, Arabic, Hindi, Thai, emoji and
ZWJ sequences, combining marks and un-normalised text (NFC), every added token alone and
glued to text, strings from the vocabulary itself, random text from many Unicode blocks
(characters assigned in this Python's Unicode version, 14.0), and, last, strings made of
every code point whose letter/number class moved between Unicode 14.0 and 16.0 (the
version of HF tokenizers' regex and of 04_qwen/unicode_tables.c's classes; "moved" in
tok_cases.json says which cases they are).

Used by ref_ch04.py (which calls write_tokenizer_refs(out_dir)) and runnable alone:
    python tests/reference/ref_ch04_tok.py --out DIR [--tokenizer data/qwen3/tokenizer.json]
"""
import argparse
import json
import os
import random
import sys
import unicodedata

import unicodedata2
from tokenizers import AddedToken, Tokenizer

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
DEFAULT_TOKENIZER = os.path.join(REPO, 'data', 'qwen3', 'tokenizer.json')
PROJECT_TOKENS = ['<image>', '<video>', '<point>', '<timestamp>']

FIXED = [
    "Hello world", "Hello, world!", " leading space", "trailing space ", "trailing spaces   ",
    "The quick brown fox jumps over the lazy dog.", "I'm here, you're there, it's fine, we've done, I'll go, he'd say.",
    "I'M", "you'RE", "don'T", "He'S", "We'Ve", "They'LL", "She'D", "I'm", "'s", "'S", "'ll", "'LL", "'lL", "'Re", "'rE",
    "'ve", "'vE", "'d", "'D", "'m", "'M", "'t", "'T", "'x", "''s", "'''", "'s's", "it'sn't", "rock'n'roll", "'ſ", "'ſt",
    "12345678", "3.14159", "1,000,000", "2024-01-01", "0x1F600", "v1.2.3", "-42", "+1e-9", "٣٤٥", "१२३", "Ⅷ", "½ ¾",
    "a   b\n\n  c\t", "a\r\nb\r\n", "\r\n", "\n", "\n\n\n", " \n ", "\t\t", "  ", " ", "x \n y", "x  \n\n  y", "a\u00a0b",
    "a\u3000b", "a\u2003\u2003b", "end\u2028line", "   leading", "tab\tsep\tvalues", "line1\nline2\rline3",
    "def f(x):\n    return x ** 2  # square\n", "int main(void) { printf(\"%d\\n\", 42); return 0; }",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}", "SELECT * FROM t WHERE id=1;", "<div class=\"x\">hi</div>",
    "https://example.com/path?q=1&r=2#frag", "user@example.com", "$HOME/.bashrc && echo ok || exit 1",
    "!!!???...", "...", "--", "—", "«quoted»", "“smart quotes”", "(nested [brackets {here}])",
    "你好，世界！", "中文分词测试：机器学习和深度学习。", "日本語のテキスト、カタカナとひらがな。", "한국어 텍스트입니다.",
    "مرحبا بالعالم", "اللغة العربية جميلة", "नमस्ते दुनिया", "हिन्दी भाषा", "สวัสดีครับ", "Привет, мир!", "Γειά σου Κόσμε",
    "שלום עולם", "Ça va? Très bien, merci.", "Straße", "naïve café résumé", "ﬁnance ﬂow", "Å", "\u212b", "\u2126",
    "e\u0301", "E\u0301", "a\u0308", "o\u0302\u0323", "o\u0323\u0302", "a\u0323\u0308\u0301", "q\u0307\u0323",
    "\u1100\u1161", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u0915\u093c", "\u0958", "\u00c5\u0301", "\u1e9b\u0323",
    "\u0041\u030a", "ḱṷ", "cafe\u0301 latte\u0301",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "❤️", "I ❤️ NY 🗽", "emoji😀glued", "🤖🤖🤖", "a😀b😀c",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<think>\n\n</think>\n\n", "<think>reasoning</think>answer", "<tool_call>{\"a\":1}</tool_call>",
    "<tool_response>ok</tool_response>", "text<|im_end|>text", "<|im_end|><|im_end|>", "<|im_end", "<|im_start|<|im_end|>",
    "<<|endoftext|>>", "<|fim_prefix|>def<|fim_suffix|>\n<|fim_middle|>", "<|vision_start|><|image_pad|><|vision_end|>",
    "<image>", "<video>", "<point>", "<timestamp>", "<image>\nDescribe the image.", "Point to the cat: <point>45.2 61.0",
    "At <timestamp>12.5 the ball bounces.", "<image><image>", "x<video>y", "<imag>", "<image", "< image >",
    "", "a", "A", "0", "?", "\u0000", "\x7f", "\x01\x02\x03", "\ufeffBOM", "\u200b\u200c\u200d", "\ufffd", "\U0010ffff",
]

WORDS = ["the", "The", "THE", "model", "vision", "language", "token", "tokenizer", "Qwen", "image", "video", "naïve",
         "Zürich", "東京", "数据", "データ", "сеть", "δίκτυο", "شبكة", "नेटवर्क", "cafe\u0301", "x", "I", "a", "isn", "don",
         "hello", "world", "foo_bar", "fooBar", "CamelCase", "snake_case", "HTTP", "JSON", "ÆØÅ", "ǅ", "ß", "İstanbul"]
PUNCT = [".", ",", "!", "?", ";", ":", "...", "--", "(", ")", "[", "]", "{", "}", "\"", "'", "`", "#", "@", "$", "%",
         "^", "&", "*", "+", "=", "<", ">", "/", "\\", "|", "~", "—", "…", "。", "、", "！", "؟", "¿", "¡", "•", "→", "€"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", " \t ", "\u00a0", "\u3000", "\u2009", "    "]
CONTR = ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'rE", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'Ll", "'d", "'D"]
EMOJI = ["😀", "👍", "👍🏿", "👩‍💻", "🧑‍🤝‍🧑", "🇩🇪", "✅", "⚠️", "🔥", "🎉"]
COMBINING = ["\u0300", "\u0301", "\u0302", "\u0303", "\u0308", "\u030a", "\u0323", "\u0327", "\u0328", "\u0331",
             "\u093c", "\u05b0", "\u064b", "\u0e31", "\u3099", "\u20d7"]

# Blocks for random text: (lo, hi) ranges of code points.
BLOCKS = [(0x20, 0x7e), (0xa0, 0x24f), (0x250, 0x2af), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff), (0x530, 0x58f),
          (0x590, 0x5ff), (0x600, 0x6ff), (0x700, 0x74f), (0x900, 0x97f), (0x980, 0x9ff), (0xa00, 0xa7f), (0xb80, 0xbff),
          (0xe00, 0xe7f), (0xf00, 0xfff), (0x10a0, 0x10ff), (0x1100, 0x11ff), (0x1200, 0x137f), (0x13a0, 0x13ff),
          (0x1780, 0x17ff), (0x1e00, 0x1fff), (0x2000, 0x206f), (0x2070, 0x209f), (0x20a0, 0x20cf), (0x2100, 0x218f),
          (0x2190, 0x22ff), (0x2460, 0x24ff), (0x2500, 0x27bf), (0x2c00, 0x2c5f), (0x3000, 0x30ff), (0x3100, 0x31ff),
          (0x3400, 0x4dbf), (0x4e00, 0x9fff), (0xa000, 0xa4cf), (0xa640, 0xa69f), (0xa720, 0xa7ff), (0xac00, 0xd7a3),
          (0xf900, 0xfaff), (0xfb00, 0xfb4f), (0xfb50, 0xfdff), (0xfe30, 0xfe4f), (0xff00, 0xffef), (0x10000, 0x1007f),
          (0x10300, 0x1032f), (0x10400, 0x1044f), (0x11000, 0x1107f), (0x11100, 0x1114f), (0x1d400, 0x1d7ff),
          (0x1f000, 0x1f02f), (0x1f300, 0x1f64f), (0x1f680, 0x1f6ff), (0x1f900, 0x1f9ff), (0x20000, 0x2a6df),
          (0x2f800, 0x2fa1f), (0xe0000, 0xe007f)]


def assigned(cp):
    c = unicodedata.category(chr(cp))
    return c not in ('Cn', 'Cs', 'Co')


def random_unicode(rng, n):
    out = []
    while len(out) < n:
        lo, hi = rng.choice(BLOCKS)
        cp = rng.randint(lo, hi)
        if assigned(cp):
            out.append(chr(cp))
    return ''.join(out)


def random_mix(rng, added):
    parts = []
    for _ in range(rng.randint(1, 14)):
        r = rng.random()
        if r < 0.30:
            w = rng.choice(WORDS)
            parts.append(w.upper() if rng.random() < 0.1 else w)
        elif r < 0.45:
            parts.append(rng.choice(SPACES))
        elif r < 0.55:
            parts.append(rng.choice(PUNCT) * rng.randint(1, 3))
        elif r < 0.63:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
        elif r < 0.70:
            parts.append(rng.choice(CONTR))
        elif r < 0.76:
            parts.append(rng.choice(EMOJI))
        elif r < 0.82:
            parts.append(rng.choice("aeiouAEOnNcCsS") + ''.join(rng.choice(COMBINING) for _ in range(rng.randint(1, 3))))
        elif r < 0.88:
            parts.append(random_unicode(rng, rng.randint(1, 6)))
        elif r < 0.93:
            parts.append(rng.choice(added))
        else:
            parts.append(rng.choice(["\r", "\r\n", "\n\r", "\u0085", "\u2028", "\x0b", "\x0c"]))
    return ''.join(parts)


def letter_number(ud, cp):
    c = ud.category(chr(cp))
    return 'L' if c[0] == 'L' else 'N' if c[0] == 'N' else ''


def moved_code_points():
    """The code points whose \\p{L} / \\p{N} class differs between this Python's Unicode
    (14.0, the NFC tables') and unicodedata2's (16.0, the version HF tokenizers' regex
    engine knows): mostly letters and digits assigned in 15.0, 15.1 and 16.0."""
    return [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF and
            letter_number(unicodedata, cp) != letter_number(unicodedata2, cp)]


def moved_cases(rng):
    """Every moved code point, in runs of its neighbours (pure) and one by one between
    ASCII letters, digits, punctuation, spaces and other moved code points (mixed), so
    that each regex alternative sees them on both sides."""
    moved = [chr(cp) for cp in moved_code_points()]
    cases = [''.join(moved[i:i + 40]) for i in range(0, len(moved), 40)]
    seps = ["", " ", "a", "Z", "1", "!", "'s", "\n", "  ", "é", "中", "-", "٣"]
    order = moved[:]
    rng.shuffle(order)
    for i in range(0, len(order), 24):
        cases.append(''.join(rng.choice(seps) + ch for ch in order[i:i + 24]) + rng.choice(seps))
    return cases, len(moved)


def build_corpus(tok, rng):
    added = [a.content for a in tok.get_added_tokens_decoder().values()]
    cases = list(FIXED)
    # every added token alone, glued to text on either side, and next to spaces
    for a in added:
        cases += [a, "x" + a, a + "x", " " + a + " ", "hello" + a + "world", a + a, "\n" + a + "\n"]
    # contractions in every case pattern, after words and spaces
    for c in ["s", "t", "re", "ve", "m", "ll", "d"]:
        for mask in range(1 << len(c)):
            cc = ''.join(ch.upper() if mask >> i & 1 else ch for i, ch in enumerate(c))
            cases += ["it'" + cc, "it'" + cc + "x", " '" + cc, "'" + cc + "'" + cc]
    # strings from the vocabulary itself (as text: the bytes the token stands for)
    vocab = tok.get_vocab()
    byte_dec = {}
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    k = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + k)
            k += 1
    for b, c in zip(bs, cs):
        byte_dec[chr(c)] = b
    toks = sorted(t for t in vocab if vocab[t] < 151643)
    vocab_texts = []
    for t in toks:
        try:
            vocab_texts.append(bytes(byte_dec[ch] for ch in t).decode('utf-8'))
        except (KeyError, UnicodeDecodeError):
            pass
    for _ in range(600):
        cases.append(rng.choice(vocab_texts))
    for _ in range(200):
        cases.append(''.join(rng.choice(vocab_texts) for _ in range(rng.randint(2, 6))))
    # whitespace runs of every kind before words and at the end
    for _ in range(150):
        cases.append(''.join(rng.choice(SPACES) for _ in range(rng.randint(1, 5))) + rng.choice(WORDS + [""]) +
                     ''.join(rng.choice(SPACES) for _ in range(rng.randint(0, 3))))
    # random mixtures
    for _ in range(1800):
        cases.append(random_mix(rng, added))
    # random Unicode from many blocks: a few KB in total
    for _ in range(250):
        cases.append(random_unicode(rng, rng.randint(5, 40)))
    # longer documents: prose and code blocks
    prose = ("Vision-language models read images as tokens. The connector maps CLIP features into the language "
             "model's embedding space; the model then predicts text.\n\n")
    cases.append(prose * 20)
    cases.append(' '.join(rng.choice(WORDS) for _ in range(2000)))
    cases.append(''.join(random_mix(rng, added) for _ in range(100)))
    cases.append(" " * 300 + "x" + "\n" * 200 + "a" * 500)
    return cases


def decode_cases(tok, rng, vocab_size):
    vocab = tok.get_vocab()
    # tokens whose bytes are not valid UTF-8 on their own (pieces of a character)
    partial = [i for t, i in vocab.items() if i < 151643 and not _valid(tok, i)]
    specials = [i for i in tok.get_added_tokens_decoder()]
    out = []
    out.append([])
    for b in range(256):  # every single byte token
        out.append([_byte_token_id(vocab, b)])
    for _ in range(300):
        ids = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.4:
                ids.append(rng.choice(partial))
            elif r < 0.7:
                ids.append(rng.randrange(0, 151643))
            elif r < 0.85:
                ids.append(rng.choice(specials))
            else:
                ids.append(_byte_token_id(vocab, rng.randrange(128, 256)))
        out.append(ids)
    out.append([151643, 200000, 5])  # an id past the vocabulary is skipped
    return out


def _valid(tok, i):
    return '\ufffd' not in tok.decode([i], skip_special_tokens=False)


def _byte_token_id(vocab, b):
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    if b in bs:
        return vocab[chr(b)]
    return vocab[chr(256 + sorted(set(range(256)) - set(bs)).index(b))]


def write_tokenizer_refs(out_dir, tokenizer_path=DEFAULT_TOKENIZER):
    """Writes tok_cases.json and tok_train_corpus.txt into out_dir; prints one PASS line."""
    os.makedirs(out_dir, exist_ok=True)
    tok = Tokenizer.from_file(tokenizer_path)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in PROJECT_TOKENS])
    rng = random.Random(1234)
    texts = build_corpus(tok, rng)
    moved, n_moved = moved_cases(rng)
    moved_first = len(texts)
    texts += moved
    encs = tok.encode_batch(texts, add_special_tokens=False)
    cases = []
    for s, e in zip(texts, encs):
        cases.append({"text": s, "ids": e.ids, "decoded": tok.decode(e.ids, skip_special_tokens=False)})
    dec = []
    for ids in decode_cases(tok, rng, tok.get_vocab_size()):
        dec.append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                    "text_skip": tok.decode(ids, skip_special_tokens=True)})
    doc = {"tokenizer": os.path.abspath(tokenizer_path),
           "unicode": "%s (letters, numbers), %s (NFC)" % (unicodedata2.unidata_version, unicodedata.unidata_version),
           "moved": {"first_case": moved_first, "n_cases": len(moved), "code_points": n_moved,
                     "from": unicodedata.unidata_version, "to": unicodedata2.unidata_version},
           "project_tokens": {t: tok.token_to_id(t) for t in PROJECT_TOKENS}, "cases": cases, "decode": dec}
    with open(os.path.join(out_dir, 'tok_cases.json'), 'w', encoding='utf-8') as f:
        json.dump(doc, f, ensure_ascii=False)
    # Training corpus for the C trainer: the English and code parts plus some of everything.
    corpus = '\n'.join(texts[:len(FIXED)] + texts[len(FIXED):moved_first:3]) + '\n'
    with open(os.path.join(out_dir, 'tok_train_corpus.txt'), 'w', encoding='utf-8') as f:
        f.write(corpus)
    nbytes = sum(len(s.encode('utf-8')) for s in texts)
    print("PASS tok_reference cases=%d (%d bytes, %d ids; %d made of the %d code points whose class moved from "
          "Unicode %s to %s) decode_cases=%d tokenizers=%s" %
          (len(cases), nbytes, sum(len(c["ids"]) for c in cases), len(moved), n_moved, unicodedata.unidata_version,
           unicodedata2.unidata_version, len(dec), __import__('tokenizers').__version__))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', required=True)
    ap.add_argument('--tokenizer', default=DEFAULT_TOKENIZER)
    a = ap.parse_args()
    write_tokenizer_refs(a.out, a.tokenizer)


if __name__ == '__main__':
    sys.exit(main())
