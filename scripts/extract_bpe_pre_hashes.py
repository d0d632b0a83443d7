"""Regenerate convert/bpe_pre_hashes.json from llama.cpp's converter (the pinned sdist's vendor/llama.cpp).

llama.cpp names a BPE pre-tokenizer by the sha256 of the ids its tokenizer gives for a fixed check text; the
table of known hashes is data that convert_hf_to_gguf_update.py generates. We keep the same table as JSON.
Usage: python scripts/extract_bpe_pre_hashes.py VENDOR_LLAMA_CPP_DIR
"""

import json
import re
import sys
from pathlib import Path

src = (Path(sys.argv[1]) / "conversion" / "base.py").read_text(encoding="utf-8")
body = src.split("# Marker: Start get_vocab_base_pre")[1].split("# Marker: End get_vocab_base_pre")[0]
pairs = re.findall(r'if chkhsh == "([0-9a-f]{64})":\s*\n(?:\s*#[^\n]*\n)*\s*res = "([^"]+)"', body)
chktxt = re.search(r"chktxt = ('.*')\n", body).group(1)
out = {"chktxt": eval(chktxt), "hashes": {h: name for h, name in pairs}}  # noqa: S307 - a string literal
dest = Path(__file__).resolve().parent.parent / "convert" / "bpe_pre_hashes.json"
dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
print(f"{len(pairs)} hashes → {dest}")
