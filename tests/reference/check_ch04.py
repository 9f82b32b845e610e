"""check_ch04.py DIR: what chapter 04's C side wrote, read back by the Python ecosystem.

Today that is the tokenizer our C BPE trainer produced (DIR/trained_tokenizer.json):
HF `tokenizers` must load it and encode the test strings to the same ids as our
C encoder did (DIR/trained_expected.json). The work is in check_ch04_tok.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_ch04_tok import check_tokenizer_trained  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: check_ch04.py DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if check_tokenizer_trained(sys.argv[1]) else 0)
