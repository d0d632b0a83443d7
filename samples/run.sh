#!/usr/bin/env bash
# The main job on the samples: set up, build the sample checkpoints (tiny models for every architecture and
# the real Gemma 3 270M with a trained adapter), build every layout for each, and show the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
L=.venv/bin/lorapack
OUT=samples/out
.venv/bin/python samples/make_samples.py "$OUT"
.venv/bin/python samples/make_gemma.py "$OUT" >/dev/null
REPORT=$OUT/report
rm -rf "$REPORT" && mkdir -p "$REPORT"
build_all() {  # NAME BASE ADAPTER...
  local name=$1 base=$2; shift 2
  $L build "$base" "$@" -o "$REPORT/$name.combined.gguf" --quiet
  $L build "$base" "$@" -o "$REPORT/$name.separate" --layout separate --quiet
  $L build "$base" "$@" -o "$REPORT/$name.merged.gguf" --layout merged --quiet
  $L unpack "$REPORT/$name.combined.gguf" -o "$REPORT/$name.unpacked" --quiet
  if diff -r "$REPORT/$name.separate" "$REPORT/$name.unpacked" >/dev/null; then same=yes; else same=NO; fi
  local verdicts=""
  for art in "$name.combined.gguf" "$name.separate" "$name.merged.gguf"; do
    local v
    v=$($L validate "$REPORT/$art" --base "$base" "$@" --quiet || true)  # a FAIL is shown, not fatal
    v=${v%%$'\n'*}
    verdicts+="${v%% (*} "
  done
  printf '%-12s combined %6s  separate %6s  merged %6s  unpack==separate: %-3s  validate: %s\n' "$name" \
    "$(du -h "$REPORT/$name.combined.gguf" | cut -f1)" "$(du -sh "$REPORT/$name.separate" | cut -f1)" \
    "$(du -h "$REPORT/$name.merged.gguf" | cut -f1)" "$same" "$verdicts"
}
echo "== lorapack sample report (outputs in $REPORT)"
build_all llama $OUT/llama/base $OUT/llama/adapters/{plain,rslora,patterns,embed}
build_all phi3 $OUT/phi3/base $OUT/phi3/adapters/{plain,rslora}
build_all gemma3 $OUT/gemma3/base $OUT/gemma3/adapters/plain
build_all gemma3mm $OUT/gemma3mm/base $OUT/gemma3mm/adapters/plain
build_all qwen2 $OUT/qwen2/base $OUT/qwen2/adapters/{plain,alpha_pattern}
build_all qwen3 $OUT/qwen3/base $OUT/qwen3/adapters/plain
build_all gemma2 $OUT/gemma2/base $OUT/gemma2/adapters/plain
build_all granite $OUT/granite/base $OUT/granite/adapters/plain
build_all smollm3 $OUT/smollm3/base $OUT/smollm3/adapters/plain
build_all mistral3 $OUT/mistral3/base $OUT/mistral3/adapters/plain
build_all gemma3-270m $OUT/gemma3-270m/base tuned=$OUT/gemma3-270m/adapters/tuned
echo
$L inspect "$REPORT/gemma3-270m.separate"
echo
echo "== which layout? lorapack compare on Gemma 3 270M (llama.cpp running each layout)"
$L compare $OUT/gemma3-270m/base tuned=$OUT/gemma3-270m/adapters/tuned -o "$REPORT/compare"
echo
echo "greedy output of the trained Gemma 3 270M adapter (before → after):"
.venv/bin/python -c "
import json; r = json.load(open('$OUT/gemma3-270m/greedy_check.json'))
for p, b, a in zip(r['prompts'], r['before'], r['after']): print(f'  {p!r}: {b!r} → {a!r}')
print(f\"  changed on {r['changed']} of 5 prompts\")"
