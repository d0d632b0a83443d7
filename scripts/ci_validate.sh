#!/usr/bin/env bash
# The release gate, on the samples: build every layout, validate each with --junit; fail on any non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
L=.venv/bin/lorapack
S=samples/out
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
mkdir -p reports
gate() {  # NAME BASE ADAPTER...
  local name=$1 base=$2; shift 2
  for layout in combined separate merged; do
    local art="$OUT/$name.$layout"
    [ "$layout" = separate ] || art="$art.gguf"
    $L build "$base" "$@" --layout "$layout" -o "$art" --quiet
    $L validate "$art" --base "$base" "$@" --quiet --force --junit "reports/$name.$layout.xml"
  done
}
gate llama $S/llama/base plain=$S/llama/adapters/plain rs=$S/llama/adapters/rslora pat=$S/llama/adapters/patterns tr=$S/llama/adapters/trainer
gate phi3 $S/phi3/base plain=$S/phi3/adapters/plain
gate gemma3 $S/gemma3/base plain=$S/gemma3/adapters/plain
gate gemma3mm $S/gemma3mm/base plain=$S/gemma3mm/adapters/plain
gate qwen2 $S/qwen2/base plain=$S/qwen2/adapters/plain ap=$S/qwen2/adapters/alpha_pattern
gate qwen3 $S/qwen3/base plain=$S/qwen3/adapters/plain
gate gemma2 $S/gemma2/base plain=$S/gemma2/adapters/plain
gate granite $S/granite/base plain=$S/granite/adapters/plain
gate smollm3 $S/smollm3/base plain=$S/smollm3/adapters/plain
gate mistral3 $S/mistral3/base plain=$S/mistral3/adapters/plain
gate gemma3-270m $S/gemma3-270m/base tuned=$S/gemma3-270m/adapters/tuned
echo "release gate: every sample artifact validated (JUnit in reports/)"
