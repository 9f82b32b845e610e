#!/usr/bin/env python3
"""check_ch04_tok.py: a tokenizer trained by our C trainer, read by HF `tokenizers`.

tests/verify_ch04_tok.h (C) trains a BPE tokenizer on DIR/tok_train_corpus.txt, writes it
as DIR/trained_tokenizer.json, and writes its own encodings of the test corpus to
DIR/trained_expected.json ({"strings": [...], "ids": [[...], ...]}). Here HF loads the
same file and encodes the same strings: the ids must be identical, and HF's decode must
give back the NFC of each string. Also checks the file's structure (vocab size, merges
format, added tokens).

Called by check_ch04.py (check_tokenizer_trained(dir)) or alone:
    python tests/reference/check_ch04_tok.py DIR
Prints one PASS/FAIL line per check; returns the number of failures.
"""
import json
import os
import sys
import unicodedata

from tokenizers import Tokenizer


def check_tokenizer_trained(d):
    failed = 0

    def report(name, ok, msg):
        nonlocal failed
        print("%s %-48s %s" % ("PASS" if ok else "FAIL", name, msg))
        failed += 0 if ok else 1

    tpath = os.path.join(d, 'trained_tokenizer.json')
    epath = os.path.join(d, 'trained_expected.json')
    if not (os.path.exists(tpath) and os.path.exists(epath)):
        report('tok_trained_files', False, 'missing %s or %s (run verify_ch04 first)' % (tpath, epath))
        return failed
    try:
        tok = Tokenizer.from_file(tpath)
    except Exception as e:  # a file HF cannot read is the failure we look for
        report('tok_trained_hf_load', False, '%s: %s' % (tpath, e))
        return failed
    raw = json.load(open(tpath, encoding='utf-8'))
    model = raw['model']
    added = {a['content']: a['id'] for a in raw['added_tokens']}
    report('tok_trained_hf_load', True, '%s: %d ids (%d vocab + %d added), %d merges as [a, b] pairs' %
           (tpath, tok.get_vocab_size(), len(model['vocab']), len(added), len(model['merges'])))
    want_added = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<image>', '<video>', '<point>', '<timestamp>']
    report('tok_trained_added_tokens', list(added) == want_added and
           all(tok.token_to_id(a) == added[a] for a in want_added),
           ' '.join('%s=%d' % (a, added.get(a, -1)) for a in want_added))
    exp = json.load(open(epath, encoding='utf-8'))
    strings, c_ids = exp['strings'], exp['ids']
    encs = tok.encode_batch(strings, add_special_tokens=False)
    bad, bad_rt, first = 0, 0, None
    for i, (s, e, ours) in enumerate(zip(strings, encs, c_ids)):
        if e.ids != ours:
            bad += 1
            first = first if first is not None else (i, s[:40], e.ids[:8], ours[:8])
        if tok.decode(e.ids, skip_special_tokens=False) != unicodedata.normalize('NFC', s):
            bad_rt += 1
    report('tok_trained_same_ids', bad == 0 and len(strings) == len(c_ids) and len(strings) > 0,
           '%d strings, %d ids, %d differ between HF and C%s' %
           (len(strings), sum(len(x) for x in c_ids), bad, '' if first is None else ' (first: %r)' % (first,)))
    report('tok_trained_hf_roundtrip', bad_rt == 0, '%d strings, %d do not round-trip through HF' % (len(strings), bad_rt))
    return failed


if __name__ == '__main__':
    if len(sys.argv) != 2:
        print('usage: check_ch04_tok.py DIR', file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if check_tokenizer_trained(sys.argv[1]) else 0)
