#!/usr/bin/env bash
# tests/test_book.sh: the book's tests. One line per check, `PASS name` or
# `FAIL name: why`; exits non-zero if any check failed.
#
#   1. golden: tests/book/golden_input.c renders to exactly tests/book/golden_expected.html
#   2. bad input: every kind of broken directive or missing file stops the weaver
#      with one `error: FILE:LINE: reason` line and a non-zero status
#   3. the book `make book` wrote (build/book): every source file of every chapter
#      (`make print-sources` plus the chapters' headers) is on a page, every
#      directive was resolved, every page has its code
#   4. a real browser: headless Chromium loads every page from disk with no console
#      message, every link of the pages as Chromium parsed them resolves, and
#      screenshots of every page at desktop width, and of the index and chapter
#      01 at phone width, are saved under build/book/screenshots/
#
# Run from anywhere; WEAVER (default build/book/weaver), BOOK (default
# build/book) and CHROMIUM (default: chromium on the PATH) can be overridden.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=tests/lib.sh
source tests/lib.sh   # pass, fail, expect_error; the scratch directory $T
ROOT=$PWD
WEAVER=${WEAVER:-$ROOT/build/book/weaver}
BOOK=${BOOK:-build/book}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
TMP=$T
require_binary "$WEAVER" "make book builds it"

# ---- 1. golden -------------------------------------------------------------------
if "$WEAVER" --file tests/book/golden_input.c --out "$TMP/golden.html" 2>"$TMP/err" &&
    cmp -s "$TMP/golden.html" tests/book/golden_expected.html; then
    pass "golden: tests/book/golden_input.c renders to golden_expected.html"
else
    fail "golden: tests/book/golden_input.c differs from golden_expected.html: $(cat "$TMP/err"; diff "$TMP/golden.html" tests/book/golden_expected.html 2>&1 | head -5)"
fi

# ---- 2. bad input ------------------------------------------------------------------
# A tiny book in a scratch directory: one chapter with one file, so each case
# can break exactly one thing.
fake_book() {
    rm -rf "$TMP/fake" && mkdir -p "$TMP/fake/01_demo" "$TMP/fake/book/intro" "$TMP/fake/tests/book"
    cp book/style.css "$TMP/fake/book/"
    cp tests/book/golden_results.md "$TMP/fake/tests/book/"
    printf '%s\n' 'This book is a test.' > "$TMP/fake/book/intro/index.md"
    printf '%s\n' '# A demo chapter' '' 'It has one file.' '' '## What to read first' '' 'Read @ref(01_demo/demo.c:demo).' \
        '' '## Exercises' '' '1. What does demo return?' > "$TMP/fake/book/intro/01_demo.md"
    printf '%s\n' '// demo.c: a file.' 'int demo(void) { return 1; }' > "$TMP/fake/01_demo/demo.c"
    printf '%s\n' '01_demo: 01_demo/demo.c' '02_next: ' > "$TMP/fake/sources.txt"
}

# weaver_refuses NAME PATTERN: the weaver, run in the fake book, refuses it:
# exit status 1 and one line, `error: ` followed by PATTERN (an extended regex).
weave_fake() { (cd "$TMP/fake" && "$WEAVER" --sources sources.txt --out out); }
weaver_refuses() { expect_error "bad input: $1" "^error: $2" weave_fake; }

fake_book
if (cd "$TMP/fake" && "$WEAVER" --sources sources.txt --out out >/dev/null 2>"$TMP/err") && [ -f "$TMP/fake/out/01_demo.html" ]; then
    pass "bad input: the unbroken scratch book builds"
else
    fail "bad input: the unbroken scratch book does not build: $(cat "$TMP/err")"
fi

fake_book; printf '%s\n' '# A demo chapter' '' 'See @ref(01_demo/demo.c:nothere).' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@ref to a missing function" "book/intro/01_demo.md:3: @ref\(01_demo/demo.c:nothere\)"
fake_book; printf '%s\n' '# A demo chapter' '' 'See @ref(01_demo/demo.c:99).' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@ref to a line past the end" "book/intro/01_demo.md:3: .*has 2 lines"
fake_book; printf '%s\n' '# A demo chapter' '' 'See @ref(nowhere/x.c).' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@ref to a file not in the book" "book/intro/01_demo.md:3: @ref\(nowhere/x.c\): .*not a file of the book"
fake_book; printf '%s\n' '# A demo chapter' '' '@run(echo partial; echo oops >&2; exit 3)' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@run of a failing command" "book/intro/01_demo.md:3: @run\(.*\) failed \(exit status 3\): oops"
fake_book; printf '%s\n' '# A demo chapter' '' 'Inline @run(echo x) is not allowed.' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@run inside a paragraph" "book/intro/01_demo.md:3: @run must stand alone"
fake_book; printf '%s\n' '# A demo chapter' '' '@embed(tests/book/missing.md)' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@embed of a missing file" "book/intro/01_demo.md:3: @embed\(tests/book/missing.md\): cannot read"
fake_book; printf '%s\n' '# A demo chapter' '' '@embed(tests/book/golden_results.md#other)' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@embed without a date and machine" "book/intro/01_demo.md:3: .*does not say when"
fake_book; printf '%s\n' '# A demo chapter' '' '@embed(tests/book/golden_results.md#nosuch)' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@embed of a missing section" "book/intro/01_demo.md:3: .*has no heading '#nosuch'"
fake_book; printf '%s\n' '# A demo chapter' '' 'See @ref(01_demo/demo.c:demo' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "an unclosed directive" "book/intro/01_demo.md:3: @ref\( is never closed"
fake_book; printf '%s\n' '// demo.c: a file.' 'int demo(void) {' '    // see @ref(01_demo/demo.c:demo)' '    return 1;' '}' > "$TMP/fake/01_demo/demo.c"
weaver_refuses "a directive inside code" "01_demo/demo.c:3: @ref inside code"
fake_book; printf '%s\n' '01_demo: 01_demo/demo.c 01_demo/gone.c' > "$TMP/fake/sources.txt"
weaver_refuses "a missing source file" "01_demo/gone.c: cannot read"
fake_book; rm "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "a chapter without its intro" "book/intro/01_demo.md: missing"
fake_book; printf '%s\n' 'A demo chapter' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "an intro without a title" "book/intro/01_demo.md:1: an intro starts with its title"
fake_book; printf '%s\n' '# A demo chapter' '' '```c' 'int x;' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "an unclosed fenced block" "book/intro/01_demo.md:3: a fenced block"
fake_book; printf '%s\n' '# A demo chapter' '' '@image(tests/book/missing.svg|A picture)' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@image of a missing file" "book/intro/01_demo.md:3: @image\(tests/book/missing.svg\|A picture\): cannot read"
fake_book; printf '%s\n' '# A demo chapter' '' '@image(tests/book/golden_results.md)' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@image without a caption" "book/intro/01_demo.md:3: .*a caption is required"
fake_book; printf '%s\n' '# A demo chapter' '' '@image(tests/book/golden_results.md|Not a picture)' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "@image of a file that is no picture" "book/intro/01_demo.md:3: .*is not a PNG, JPEG or SVG file"
fake_book; printf '%s\n' '# A demo chapter' '' '## Exercises' '' '1. Why?' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "a chapter without a reading guide" "book/intro/01_demo.md:1: chapter 01_demo has no reading guide"
fake_book; printf '%s\n' '# A demo chapter' '' '## What to read first' '' 'demo.c.' > "$TMP/fake/book/intro/01_demo.md"
weaver_refuses "a chapter without exercises" "book/intro/01_demo.md:1: chapter 01_demo has no exercises"
fake_book; printf '%s\n' '// demo.c: a file, as of the third session.' 'int demo(void) { return 1; }' > "$TMP/fake/01_demo/demo.c"
weaver_refuses "prose that names a session" "01_demo/demo.c:1: prose tells history \\(the word 'session'"
fake_book; printf '%s\n' '// demo.c: fixed in 3a07ff2.' 'int demo(void) { return 1; }' > "$TMP/fake/01_demo/demo.c"
weaver_refuses "prose that cites a commit" "01_demo/demo.c:1: prose tells history \\(a commit hash"
fake_book; printf '%s\n' '// demo.c: 0x3f81 and deadbeef are not hashes; 0x1234abcd is a number.' 'int demo(void) { return 1; }' > "$TMP/fake/01_demo/demo.c"
if weave_fake >/dev/null 2>"$TMP/err"; then pass "bad input: hex numbers and words are not taken for commit hashes"
else fail "bad input: hex numbers taken for history: $(cat "$TMP/err")"; fi

# ---- 3. the book make book wrote -----------------------------------------------------
MANIFEST=$BOOK/manifest.txt
if [ ! -f "$MANIFEST" ] || [ ! -f "$BOOK/index.html" ]; then
    fail "book built: $BOOK/manifest.txt or index.html is missing (run make book first)"
    exit 1
fi
SOURCES=$(make -s --no-print-directory print-sources)
missing=""
nfiles=0
while IFS= read -r line; do
    [ -z "$line" ] && continue
    chapter=${line%%:*}
    files=$(echo "${line#*:}" | tr ' ' '\n' | grep . ; ls "$chapter"/*.h "$chapter"/*.cuh 2>/dev/null)
    for f in $files; do
        nfiles=$((nfiles + 1))
        grep -q "^source $f $chapter.html#" "$MANIFEST" || missing="$missing $f"
    done
done <<<"$SOURCES"
if [ -z "$missing" ] && [ "$nfiles" -gt 0 ]; then
    pass "book: all $nfiles source files of every chapter (print-sources and headers) are on their chapter's page"
else
    fail "book: source files missing from the book:${missing:- none listed}"
fi

# every page the manifest lists exists and shows code
bad=""
for page in $(awk '/^page .*\.html$/ {print $2}' "$MANIFEST"); do
    [ "$page" = index.html ] && continue
    want=$(grep -c "^source .* $page#" "$MANIFEST")
    have=$(grep -c '<article class="file"' "$BOOK/$page")
    lines=$(grep -c '<span class="l" id=' "$BOOK/$page")
    [ "$want" -eq "$have" ] && [ "$lines" -gt 0 ] || bad="$bad $page($have/$want files, $lines code lines)"
done
[ -z "$bad" ] && pass "book: every chapter page has each of its files and their code" || fail "book: pages without their code:$bad"

# a generated file is summarised: its prose and top-level lines, not its data
shown=$(grep -o 'id="unicode_tables.c-L[0-9]*"' "$BOOK/04_qwen.html" | wc -l)
total=$(wc -l < 04_qwen/unicode_tables.c)
if grep -q 'lines of generated data' "$BOOK/04_qwen.html" && [ "$shown" -lt 100 ] && [ "$total" -gt 1000 ]; then
    pass "book: the generated unicode_tables.c is summarised ($shown of its $total lines shown)"
else
    fail "book: unicode_tables.c is not summarised ($shown of $total lines shown)"
fi

# a name in code links to its definition, across chapters: chapter 05 calls
# chapter 04's one forward, defined in 04_qwen/qwen.c
def=$(grep -n '^void qwen_forward_embeds(' 04_qwen/qwen.c | cut -d: -f1)
if [ -n "$def" ] && grep -q "<a class=\"sym\" href=\"04_qwen.html#qwen.c-L$def\"><span class=\"f\">qwen_forward_embeds<" "$BOOK/05_training.html"; then
    pass "book: names in code link to their definitions across chapters (qwen_forward_embeds -> 04_qwen.html#qwen.c-L$def)"
else
    fail "book: chapter 05's call of qwen_forward_embeds does not link to 04_qwen/qwen.c:${def:-?}"
fi

# every directive resolved: none is left as text outside <code>, and each one
# written in an intro or in a source's prose is in the manifest.
left=$(sed -e 's#<code>[^<]*</code>##g' "$BOOK"/*.html | grep -c '@\(ref\|run\|embed\)(')
[ "$left" -eq 0 ] && pass "book: no directive left unresolved in the pages" || fail "book: $left directives left as text"
short=""
for f in book/intro/*.md $(echo "$SOURCES" | tr ' ' '\n' | grep '\.\(c\|cu\)$') $(ls 0*/*.h 2>/dev/null); do
    [ -f "$f" ] || continue
    if [ "${f%.md}" != "$f" ]; then text=$(cat "$f"); else text=$(grep '^//' "$f"); fi
    written=$(echo "$text" | sed -e 's/`[^`]*`//g' | grep -o '@\(ref\|run\|embed\)(' | wc -l)
    resolved=$(grep -c "^directive $f:" "$MANIFEST")
    [ "$written" -le "$resolved" ] || short="$short $f($resolved of $written)"
done
[ -z "$short" ] && pass "book: every directive written in the intros and sources was resolved ($(grep -c '^directive ' "$MANIFEST") in all)" \
    || fail "book: directives not resolved:$short"

# ---- 4. a real browser ------------------------------------------------------------------
if [ -z "$CHROMIUM" ]; then
    fail "browser: chromium is not installed (apt-get install chromium)"
    exit 1
fi
browse() {   # browse OUT.html URL: the DOM as Chromium built it, its log on $TMP/log
    timeout 120 "$CHROMIUM" --headless --disable-gpu --no-sandbox --user-data-dir="$TMP/profile" \
        --enable-logging=stderr --v=0 --dump-dom "$2" >"$1" 2>"$TMP/log"
}
mkdir -p "$TMP/dom"
cp "$BOOK/style.css" "$TMP/dom/"
[ -d "$BOOK/img" ] && cp -r "$BOOK/img" "$TMP/dom/"
npages=0
for page in "$BOOK"/*.html; do
    name=$(basename "$page")
    npages=$((npages + 1))
    if ! browse "$TMP/dom/$name" "file://$ROOT/$page" || ! grep -q '</html>' "$TMP/dom/$name"; then
        fail "browser: $name did not load: $(grep -v dbus "$TMP/log" | tail -2)"
        continue
    fi
    console=$(grep ':CONSOLE' "$TMP/log")
    [ -z "$console" ] && pass "browser: $name loads with no console message" || fail "browser: $name console: $console"
    if [ "$name" != index.html ]; then
        n=$(grep -c '<span class="l" id=' "$TMP/dom/$name")
        [ "$n" -gt 0 ] && pass "browser: $name shows its code ($n lines)" || fail "browser: $name has no code block"
    fi
done
if "$WEAVER" --check-links "$TMP/dom" >"$TMP/links" 2>&1; then
    pass "browser: no broken internal link in the $npages pages as parsed ($(cat "$TMP/links"))"
else
    fail "browser: broken links: $(head -5 "$TMP/links")"
fi

SHOTS=$BOOK/screenshots
mkdir -p "$SHOTS"
# every page at desktop width; the index and the first chapter at phone width too
chapters=$(awk '/^page .*\.html$/ && $2 != "index.html" {print $2}' "$MANIFEST")
first=$(echo "$chapters" | head -n 1)
for page in index.html $chapters; do
    sizes=1280,900
    [ "$page" = index.html ] || [ "$page" = "$first" ] && sizes="1280,900 390,844"
    for size in $sizes; do
        shot=$SHOTS/${page%.html}-${size%,*}x${size#*,}.png
        rm -f "$shot"
        timeout 120 "$CHROMIUM" --headless --disable-gpu --no-sandbox --user-data-dir="$TMP/profile" --hide-scrollbars \
            --window-size="$size" --screenshot="$ROOT/$shot" "file://$ROOT/$BOOK/$page" >/dev/null 2>&1
        if [ -s "$shot" ] && [ "$(head -c 8 "$shot" | od -An -c | tr -d ' ')" = '211PNG\r\n032\n' ]; then
            pass "browser: screenshot $shot"
        else
            fail "browser: no screenshot $shot"
        fi
    done
done

finish
