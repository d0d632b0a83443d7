"""The lorapack.* metadata keys and tensor namespaces: the contract between the files build writes and the readers
(unpack, inspect, validate). docs/combined-format.md documents them; renaming one breaks existing artifacts."""

FINGERPRINT = "lorapack.base.fingerprint"

# combined: every adapter's keys under lorapack.combined.<NAME>., its tensors under adapter.<NAME>.
COMBINED = "lorapack.combined."
COMBINED_ADAPTERS = COMBINED + "adapters"
ADAPTER_NS = "adapter."

# an adapter file's own description (also inside combined, namespaced)
ADAPTER_NAME = "lorapack.adapter.name"
ADAPTER_LORA_ALPHA = "lorapack.adapter.lora_alpha"
ADAPTER_RANK = "lorapack.adapter.rank"
ADAPTER_SCALING = "lorapack.adapter.scaling"
ADAPTER_FOLDED = "lorapack.adapter.scale_folded_into_lora_b"
ADAPTER_TARGETS = "lorapack.adapter.targets"
ADAPTER_CONFIG = "lorapack.adapter.config"
ADAPTER_SOURCE_FILES = "lorapack.adapter.source_files"
ADAPTER_SOURCE_SHA256 = "lorapack.adapter.source_sha256"
SEPARATE_BLOCKERS = "separate_blockers"  # under lorapack.combined.<NAME>.

# merged: which adapters were baked in, each with its weight (the user's --scale)
MERGED_ADAPTERS = "lorapack.merged.adapters"
MERGED_WEIGHTS = "lorapack.merged.scales"
MERGED_ALPHAS = "lorapack.merged.alphas"
MERGED_RANKS = "lorapack.merged.ranks"
MERGED_SOURCE_SHA256 = "lorapack.merged.source_sha256"

# DoRA magnitudes ride in combined files beside lora_a/lora_b
DORA_SUFFIX = ".dora_m"
