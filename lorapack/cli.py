"""The lorapack command line: build, unpack, inspect (validate and compare come with the validate stage)."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import click

from lorapack.errors import LorapackError

LAYOUTS = ("combined", "separate", "merged")


class Progress:
    """A byte progress bar on stderr when it is a terminal (and not --quiet); silent otherwise."""

    def __init__(self, total: int, label: str, quiet: bool):
        self.bar = None
        if not quiet and sys.stderr.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=False)

    def __call__(self, n: int) -> None:
        if self.bar:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def fail(e: LorapackError) -> None:
    click.echo(f"error: {e}", err=True)
    if e.hint:
        click.echo(f"hint: {e.hint}", err=True)
    sys.exit(2)


class Group(click.Group):
    """Turns domain errors into one `error:` line and a `hint:` line, exit 2, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LorapackError as e:
            fail(e)
        except OSError as e:
            click.echo(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), err=True)
            sys.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lorapack")
def main() -> None:
    """Convert PEFT LoRA adapters and their Hugging Face base to GGUF for llama.cpp, Ollama and friends.

    \b
      lorapack build base/ adapter/ -o out.gguf                  one combined file
      lorapack build base/ chat=adapter/ --layout separate -o dir  llama.cpp's base + adapter files
      lorapack build base/ adapter/ --layout merged -o merged.gguf adapters baked in
      lorapack unpack out.gguf -o dir                             combined → separate
      lorapack inspect out.gguf                                   what a file or folder holds
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("gguf").setLevel(logging.ERROR)  # gguf-py's tokenizer notes are not the user's concern
    # nor are the libraries' loading advice and deprecations; errors and verdicts say what matters
    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", category=FutureWarning)


def parse_scales(values: tuple[str, ...]) -> dict[str, float]:
    scales = {}
    for v in values:
        name, sep, num = v.partition("=")
        try:
            scales[name] = float(num) if sep else float("nan")
        except ValueError:
            scales[name] = float("nan")
        if not sep or scales[name] != scales[name]:
            raise LorapackError(f"--scale {v!r} is not NAME=NUMBER")
    return scales


@main.command()
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("adapters", nargs=-1)
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Output: a .gguf file (combined, merged) or a folder (separate).")
@click.option("--layout", type=click.Choice(LAYOUTS), default="combined", show_default=True,
              help="combined: one GGUF with namespaced adapters; separate: DIR/base.gguf + DIR/adapters/*.gguf "
                   "(llama.cpp --lora); merged: adapters baked into the weights.")
@click.option("--outtype", default="f16", show_default=True, help="Base weights: f32, f16, bf16, q8_0, q4_0, q5_0.")
@click.option("--adapter-outtype", default="f16", show_default=True, help="Adapter tensors: f32, f16, bf16, q8_0.")
@click.option("--scale", "scales", multiple=True, metavar="NAME=S",
              help="Merged layout only: weight of adapter NAME (default 1).")
@click.option("--adapters-only", is_flag=True, help="Separate layout: write only adapters/ (you have the base GGUF).")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
def build(base, adapters, out, layout, outtype, adapter_outtype, scales, adapters_only, force, quiet):
    """Convert BASE (a Hugging Face folder) and PEFT ADAPTERs ([NAME=]DIR) to GGUF.

    An ADAPTER argument is NAME=DIR when the text before the first '=' is a name ([A-Za-z0-9][A-Za-z0-9_-]{0,31});
    otherwise the adapter is named after its folder.
    """
    from lorapack.build import BuildRequest, run_build

    req = BuildRequest(base, list(adapters), out, layout, outtype, adapter_outtype, parse_scales(scales),
                       adapters_only, force)
    notes = run_build(req, lambda total: Progress(total, "writing", quiet))
    if not quiet:
        for line in notes:
            click.echo(line)


@main.command()
@click.argument("combined", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Folder to write.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
def unpack(combined, out, force, quiet):
    """Write the separate layout (base.gguf + adapters/*.gguf) from a COMBINED file, byte for byte as
    `build --layout separate` would."""
    from lorapack.pack.staging import staged
    from lorapack.pack.unpack import unpack as do_unpack

    with staged(out, force) as tmp:
        written = do_unpack(combined, tmp)
    if not quiet:
        click.echo(f"wrote {out}/base.gguf and {len(written.paths) - 1} adapter file(s)")
        for line in written.notes:
            click.echo(line.replace(str(tmp), str(out)))


@main.command()
@click.argument("target", type=click.Path(path_type=Path, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(target, as_json):
    """Show what a GGUF file (or a separate-layout folder) holds: architecture, tensors by type, adapters,
    fingerprints."""
    from lorapack.pack.inspect import describe, render

    info = describe(target)
    click.echo(json.dumps(info, indent=2) if as_json else render(info))




@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--base", "base", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="The Hugging Face base checkpoint the artifact was built from (the reference).")
@click.argument("adapters", nargs=-1)
@click.option("--probes", default=8, show_default=True, help="Random inputs per adapted layer.")
@click.option("--seed", default=0, show_default=True, help="Seed for the probes (same seed, same report).")
@click.option("--tolerance", "tolerances", multiple=True, metavar="TYPE=RTOL[:ATOL]",
              help="Override a stored type's tolerance, e.g. Q8_0=0.02 (relative Frobenius error).")
@click.option("--report", type=click.Path(path_type=Path), help="Write a JSON report here.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write JUnit XML here (for CI systems).")
@click.option("--end-to-end", is_flag=True, help="Also compare logits of whole models (PyTorch from the artifact, "
                                                  "and llama.cpp when installed) with the PEFT model.")
@click.option("--quiet", is_flag=True, help="Print only the verdict and what failed.")
def validate(artifact, base, adapters, probes, seed, tolerances, report, junit, end_to_end, quiet):
    """Check ARTIFACT (combined file, separate folder or merged file) against the unmerged PyTorch PEFT model.

    ADAPTERs are [NAME=]DIR, named as in `build`. Every adapted layer's output on random probes is recomputed
    from the artifact and compared with PEFT's LoraLayer; every base tensor with the safetensors source; the
    metadata with the config. Exit 0: all pass; 1: a mismatch (each failing tensor or key is printed);
    2: bad arguments or unusable references.
    """
    from lorapack.convert.peft import parse_adapter_arg
    from lorapack.validate.report import summary, table, write_json, write_junit
    from lorapack.validate.run import Request
    from lorapack.validate.run import validate as run_validate

    named = [parse_adapter_arg(a) for a in adapters]
    result = run_validate(Request(artifact, base, named, probes, seed, tolerances, end_to_end))
    if not quiet:
        click.echo(table(result.checks))
    click.echo(summary(result.checks))
    for c in result.checks:
        if not c.ok:
            click.echo(f"failed: {c.name} ({c.kind}: {c.value} vs {c.tolerance})")
    seconds = sum(result.timing.values())
    if report:
        write_json(report, result.checks, result.timing)
    if junit:
        write_junit(junit, result.checks, seconds)
    sys.exit(0 if result.ok else 1)


@main.command()
@click.argument("base", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("adapters", nargs=-1, required=True)
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Folder for the three layouts, compare.json and compare.png.")
@click.option("--outtype", default="f16", show_default=True, help="Base weights type for every layout.")
@click.option("--no-runtime", is_flag=True, help="Skip the llama.cpp measurements (no llama-cpp-python needed).")
def compare(base, adapters, out, outtype, no_runtime):
    """Separate files, one combined file, or merged? Build all three layouts of BASE + ADAPTERs into OUT and
    report them side by side: files and bytes, build time, validation error, and through llama.cpp load time,
    prompt and decode tokens/s, adapter switching cost and runtime-vs-merged logit agreement."""
    from lorapack.convert.peft import parse_adapter_arg
    from lorapack.validate.compare import compare as run_compare
    from lorapack.validate.compare import table

    report = run_compare(base, [parse_adapter_arg(a) for a in adapters], out, outtype, not no_runtime)
    click.echo(table(report))
    click.echo(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
