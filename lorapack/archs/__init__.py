"""One module per architecture, each building one `lorapack.spec.arch.Spec` (which registers itself).
Nothing lists these modules: lorapack.spec.arch.registry() imports every module in this package."""
