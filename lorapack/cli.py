"""The lorapack command line: build, unpack, inspect (validate and compare come with the validate stage)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import warnings
from pathlib import Path

import click

from lorapack.errors import LorapackError, clean

LAYOUTS = ("combined", "separate", "merged")
SCALE_LIMIT = 1e4  # a merge weight beyond this is a typo, and its float32 products overflow


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


def echo(text: object = "", err: bool = False) -> None:
    click.echo("\n".join(clean(line) for line in str(text).split("\n")), err=err)


def fail(message: str, hint: str | None = None, code: int = 2) -> None:
    """The only way lorapack reports an error: one `error:` line, at most one `hint:` line."""
    click.echo(f"error: {clean(message)}", err=True)
    if hint:
        click.echo(f"hint: {clean(hint)}", err=True)
    sys.exit(code)


class Interrupted(BaseException):
    """SIGTERM/SIGHUP as an exception, so that every `finally` removes its temporary files."""


def _on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def _command_name(args: list[str]) -> str:
    return next((a for a in args if not a.startswith("-")), "")


def run() -> None:
    """The `lorapack` command (and `python -m lorapack`): main(), then a quick exit. Once torch, transformers and
    PEFT are loaded the interpreter's teardown of their modules takes ~0.5 s more (measured on validate) while
    there is nothing left to write: exit-time hooks run, the streams are flushed, and the process ends."""
    try:
        main()
        code: object = 0
    except SystemExit as e:
        code = e.code
    if "torch" not in sys.modules:
        sys.exit(code)
    if not isinstance(code, int):  # sys.exit("text") prints it and exits 1; None is success
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(args: list[str] | None = None) -> None:
    """Entry point: every outcome is an exit code and at most an `error:` and a `hint:` line on stderr.
    2: bad input or arguments; 1: `validate` found the artifact wrong; 3: an internal error (a bug)."""
    args = sys.argv[1:] if args is None else args
    args = args or ["--help"]  # bare `lorapack`: the overview, not a usage error
    _no_stdin()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        cli.main(args, prog_name="lorapack", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:
        cmd = _command_name(args)
        fail(e.format_message(), f"see lorapack {cmd + ' ' if cmd in cli.commands else ''}--help")
    except click.exceptions.Abort:
        fail("interrupted; nothing was written", code=130)
    except KeyboardInterrupt:
        fail("interrupted; nothing was written", code=130)
    except Interrupted as e:
        fail(f"interrupted ({e}); nothing was written", code=128 + signal.Signals[str(e)].value)
    except LorapackError as e:
        fail(str(e), e.hint)
    except OSError as e:
        fail(f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}")
    except Exception as e:  # a bug: say so in one line; LORAPACK_DEBUG=1 shows the traceback
        if os.environ.get("LORAPACK_DEBUG") == "1":
            raise
        fail(f"internal error: {type(e).__name__}: {e}", "please report it; LORAPACK_DEBUG=1 shows the traceback",
             code=3)


def _no_stdin() -> None:
    """lorapack never reads stdin: no library may prompt (transformers asks before running remote code)."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
        sys.stdin = open(os.devnull)  # noqa: SIM115 — lives as long as the process
    except OSError:
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lorapack")
def cli() -> None:
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
    """NAME=S pairs; S must be finite in float32 (the merge is computed in float32)."""
    scales = {}
    for v in values:
        name, sep, num = v.partition("=")
        try:
            s = float(num) if sep else math.nan
        except ValueError:
            s = math.nan
        if not sep or not math.isfinite(s) or abs(s) > SCALE_LIMIT:
            raise LorapackError(f"--scale {v!r} is not NAME=NUMBER with a finite number within ±{SCALE_LIMIT:g}")
        if name in scales:
            raise LorapackError(f"--scale gives adapter {name} twice")
        scales[name] = s
    return scales


@cli.command()
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
@click.option("--split-max-size", default="0", show_default=True, metavar="N[K|M|G]",
              help="Write the model (combined or merged file, separate layout's base) as llama.cpp's split GGUF: "
                   "NAME-00001-of-0000N.gguf files of at most N bytes of tensors each (K, M, G: 1000, 1000², "
                   "1000³), cut as convert_hf_to_gguf.py --split-max-size cuts them. llama.cpp opens the first "
                   "file; lorapack reads any of them. 0: one file.")
@click.option("--dry-run", is_flag=True,
              help="Print the files, tensors, types and sizes it would write; write nothing.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
def build(base, adapters, out, layout, outtype, adapter_outtype, scales, adapters_only, split_max_size, force,
          dry_run, quiet):
    """Convert BASE (a Hugging Face folder) and PEFT ADAPTERs ([NAME=]DIR) to GGUF.

    An ADAPTER argument is NAME=DIR when the text before the first '=' is a name ([A-Za-z0-9][A-Za-z0-9_-]{0,31});
    otherwise the adapter is named after its folder.
    """
    from lorapack.build import BuildRequest, run_build
    from lorapack.pack.split import parse_size

    req = BuildRequest(base, list(adapters), out, layout, outtype, adapter_outtype, parse_scales(scales),
                       adapters_only, force, dry_run, parse_size(split_max_size))
    notes = run_build(req, lambda total: Progress(total, "writing", quiet))
    if not quiet or dry_run:
        for line in notes:
            echo(line)


@cli.command()
@click.argument("combined", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Folder to write.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
def unpack(combined, out, force, quiet):
    """Write the separate layout (base.gguf + adapters/*.gguf) from a COMBINED file, byte for byte as
    `build --layout separate` would. A split COMBINED file is named by any of its shards."""
    from lorapack.outputs import staged
    from lorapack.pack.unpack import unpack as do_unpack

    with staged(out, force, "dir", (combined,)) as tmp:
        written = do_unpack(combined, tmp)
    if not quiet:
        echo(f"wrote {out}/base.gguf and {len(written.paths) - 1} adapter file(s)")
        for line in written.notes:
            echo(line.replace(str(tmp), str(out)))


@cli.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(target, as_json):
    """Show what a GGUF file (or a separate-layout folder) holds: architecture, tensors by type, adapters,
    fingerprints. A split GGUF is named by any of its shards (or the name it was built as)."""
    from lorapack.pack.inspect import describe, render

    info = describe(target)
    echo(json.dumps(info, indent=2) if as_json else render(info))




@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--base", "base", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="The Hugging Face base checkpoint the artifact was built from (the reference).")
@click.argument("adapters", nargs=-1)
@click.option("--probes", default=8, show_default=True, type=click.IntRange(1, 4096),
              help="Random inputs per adapted layer (1 to 4096).")
@click.option("--seed", default=0, show_default=True, help="Seed for the probes (same seed, same report).")
@click.option("--tolerance", "tolerances", multiple=True, metavar="TYPE=RTOL[:ATOL]",
              help="Override a stored type's tolerance, e.g. Q8_0=0.02 (relative Frobenius error).")
@click.option("--report", type=click.Path(path_type=Path), help="Write a JSON report here.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write JUnit XML here (for CI systems).")
@click.option("--end-to-end", is_flag=True, help="Also compare logits of whole models (PyTorch from the artifact, "
                                                  "and llama.cpp when installed) with the PEFT model.")
@click.option("--force", is_flag=True, help="Replace existing --report/--junit files.")
@click.option("--quiet", is_flag=True, help="Print only the verdict and what failed.")
def validate(artifact, base, adapters, probes, seed, tolerances, report, junit, end_to_end, force, quiet):
    """Check ARTIFACT (combined file, separate folder or merged file) against the unmerged PyTorch PEFT model.

    ADAPTERs are [NAME=]DIR, named as in `build`. Every adapted layer's output on random probes is recomputed
    from the artifact and compared with PEFT's LoraLayer; every base tensor with the safetensors source; the
    metadata with the config. Exit 0: all pass; 1: the artifact is wrong, truncated or unreadable (each failing
    tensor or key is printed); 2: bad arguments or an unusable base or adapter; 3: an internal error.
    Only safetensors files are read; remote code is never run.
    """
    from lorapack.names import parse_adapter_arg
    from lorapack.outputs import check_output, write_text
    from lorapack.validate.report import junit_text, report_text, summary, table
    from lorapack.validate.run import Request
    from lorapack.validate.run import validate as run_validate

    named = [parse_adapter_arg(a) for a in adapters]
    inputs = (artifact, base, *(p for _, p in named))
    for path in (p for p in (report, junit) if p):  # before the work, not after it
        check_output(path, force, "file", inputs)
    if report and junit and os.path.abspath(report) == os.path.abspath(junit):
        raise LorapackError("--report and --junit name the same file")
    result = run_validate(Request(artifact, base, named, probes, seed, tolerances, end_to_end))
    if not quiet:
        echo(table(result.checks))
    echo(summary(result.checks))
    for c in result.checks:
        if not c.ok:
            echo(f"failed: {c.name} ({c.kind}: {c.value} vs {c.tolerance})")
    if report:
        write_text(report, report_text(result.checks, result.timing), force)
    if junit:
        write_text(junit, junit_text(result.checks, sum(result.timing.values())), force)
    sys.exit(0 if result.ok else 1)


@cli.command()
@click.argument("base", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("adapters", nargs=-1, required=True)
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Folder for the three layouts, compare.json and compare.png.")
@click.option("--outtype", default="f16", show_default=True, help="Base weights type for every layout.")
@click.option("--no-runtime", is_flag=True, help="Skip the llama.cpp measurements (no llama-cpp-python needed).")
@click.option("--force", is_flag=True, help="Replace an existing output folder that lorapack wrote.")
def compare(base, adapters, out, outtype, no_runtime, force):
    """Separate files, one combined file, or merged? Build all three layouts of BASE + ADAPTERs into OUT and
    report them side by side: files and bytes, build time, validation error, and through llama.cpp load time,
    prompt and decode tokens/s, adapter switching cost and runtime-vs-merged logit agreement.
    The llama.cpp measurements need llama-cpp-python (lorapack[llama]); the chart needs matplotlib
    (lorapack[plot]) and is skipped with a note without it."""
    from lorapack.compare import compare as run_compare
    from lorapack.compare import table, written
    from lorapack.names import parse_adapter_arg

    report = run_compare(base, [parse_adapter_arg(a) for a in adapters], out, outtype, not no_runtime, force)
    echo(table(report))
    echo(written(report, out))
