#!/usr/bin/env bash
# book/figures.sh OUT: the pictures the book draws from the project's own programs.
#
# A page about a model that looks at pictures should show some. This script
# asks the shipped nano VLM (models/nano) about three held-out scenes of the
# synthetic world and draws, for each, the scene with the model's point and
# the true one, beside the questions and the answers. The scenes come from the
# world generator with a fixed seed, and the answers from `run chat` (greedy
# decoding), so the pictures are the same every time the book is built.
# They are SVG files with the scene's PNG inside, written to OUT (the book's
# @image directives read them from build/book/fig/). Last, a short training
# run draws the loss curve the trainer writes beside its log.
#
# Needs ./05_training/run (the release build) and models/nano.
set -euo pipefail
out=${1:?usage: book/figures.sh OUT}
run=./05_training/run
[ -x "$run" ] || { echo "error: $run is not built (make ch05)" >&2; exit 1; }
[ -f models/nano/config.json ] || { echo "error: models/nano is missing (the shipped checkpoint)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
"$run" generate --out "$tmp/world" --seed 11 --n-train 1 --n-test 3 --quiet >/dev/null

# the value of the answer that follows a question in a test row (JSON strings
# of the world hold no escaped quotes)
answer_after() {   # ROW QUESTION
    printf '%s\n' "$1" | sed 's/},{/}\n{/g' | grep -A1 -F "\"value\":\"$2\"" | sed -n '2s/.*"value":"\([^"]*\)".*/\1/p'
}
ask() {   # IMAGE QUESTION
    "$run" chat --image "$1" "$2" 2>/dev/null | sed -n 's/^assistant: //p'
}
# x y of "<point>x y" as pixels of a SIDE-pixel square
point_px() {   # TEXT SIDE
    printf '%s\n' "$1" | sed -n 's/.*<point>\([0-9.]*\) \([0-9.]*\).*/\1 \2/p' | awk -v s="$2" '{printf "%.1f %.1f", $1 * s / 100, $2 * s / 100}'
}
esc() { sed 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g'; }

k=0
while IFS= read -r row; do
    img=$(printf '%s\n' "$row" | sed 's/.*"image":"\([^"]*\)".*/\1/')
    point_q=$(printf '%s\n' "$row" | grep -o '"value":"Point to the [^"]*"' | head -n 1 | sed 's/"value":"//; s/"$//')
    truth_caption=$(answer_after "$row" "Describe the image.")
    truth_point=$(answer_after "$row" "$point_q")
    said_caption=$(ask "$tmp/world/images/$img" "Describe the image.")
    said_point=$(ask "$tmp/world/images/$img" "$point_q")
    S=256
    read -r tx ty <<<"$(point_px "$truth_point" $S)"
    mx=""; my=""
    if [ -n "$(point_px "$said_point" $S)" ]; then read -r mx my <<<"$(point_px "$said_point" $S)"; fi
    png=$(base64 -w0 "$tmp/world/images/$img")
    # the text first: its height decides the picture's
    y=34
    line() {   # COLOUR TEXT ATTRS: one line of text, folded at 58 characters
        while IFS= read -r part; do
            echo "<text x=\"286\" y=\"$y\" fill=\"$1\"$3>$(printf '%s' "$part" | esc)</text>" >> "$tmp/text"
            y=$((y + 19))
        done < <(printf '%s\n' "$2" | fold -s -w 58)
        y=$((y + 3))
    }
    : > "$tmp/text"
    line "#222" "Describe the image." ' font-weight="bold"'
    line "#c2185b" "model: $said_caption" ""
    line "#1a7f37" "truth: $truth_caption" ""
    y=$((y + 14))
    line "#222" "$point_q" ' font-weight="bold"'
    line "#c2185b" "model: $said_point  (the cross)" ""
    line "#1a7f37" "truth: $truth_point  (the ring)" ""
    H=$(( y > 266 ? y + 10 : 276 ))
    {
        echo "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"$H\" viewBox=\"0 0 760 $H\" font-family=\"sans-serif\" font-size=\"14\">"
        echo "<rect width=\"760\" height=\"$H\" fill=\"#fbfaf7\"/>"
        echo "<image x=\"10\" y=\"10\" width=\"$S\" height=\"$S\" style=\"image-rendering:pixelated\" href=\"data:image/png;base64,$png\"/>"
        echo "<circle cx=\"$(awk -v a="$tx" 'BEGIN{print a+10}')\" cy=\"$(awk -v a="$ty" 'BEGIN{print a+10}')\" r=\"9\" fill=\"none\" stroke=\"#1a7f37\" stroke-width=\"3\"/>"
        if [ -n "$mx" ]; then
            cross=$(awk -v x="$mx" -v y="$my" 'BEGIN{x += 10; y += 10; printf "M%.1f %.1f L%.1f %.1f M%.1f %.1f L%.1f %.1f", x-7, y-7, x+7, y+7, x-7, y+7, x+7, y-7}')
            echo "<path d=\"$cross\" stroke=\"#fff\" stroke-width=\"5\"/>"
            echo "<path d=\"$cross\" stroke=\"#c2185b\" stroke-width=\"2.5\"/>"
        fi
        cat "$tmp/text"
        echo "</svg>"
    } > "$out/scene_$k.svg.tmp"
    mv "$out/scene_$k.svg.tmp" "$out/scene_$k.svg"
    k=$((k + 1))
done < "$tmp/world/test.jsonl"
[ "$k" -eq 3 ] || { echo "error: book/figures.sh drew $k scenes, not 3" >&2; exit 1; }

# The loss curve the trainer draws (its loss.svg): 20 steps of the tiny
# configuration chapter 06's tests train, on the demo's 32 captioned shapes.
"$run" --config 06_distributed/configs/tiny.conf --out "$tmp/demo" --steps 1 >/dev/null 2>&1
"$run" train --config 06_distributed/configs/tiny.conf --data "$tmp/demo/captions.jsonl" \
    --images "$tmp/demo/images" --out "$tmp/curve" >/dev/null 2>"$tmp/curve.err" ||
    { echo "error: book/figures.sh: the training run for the loss curve failed: $(tail -n 1 "$tmp/curve.err")" >&2; exit 1; }
cp "$tmp/curve/loss.svg" "$out/loss_tiny.svg"
