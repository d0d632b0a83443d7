"""lorapack: PEFT LoRA adapters → GGUF (combined, separate or merged), validated against PyTorch."""

__version__ = "0.1.0"
