"""The `graphdiff` command (also `python -m graphdiff`).

Each subcommand lives in its own module, imported only when it runs, so `graphdiff demo` never loads
graphviz or matplotlib. A module provides `add_arguments(parser)` and `run(args) -> exit code`.
"""
import argparse
import importlib
import importlib.metadata
import math
import os
import signal
import sys

# name: (module, one-line help)
COMMANDS = {
    # graphdiff.viz.cli: with --out the tour draws diagrams; without it, graphdiff.demo's quick check runs
    "demo": ("graphdiff.viz.cli", "the tour (--out DIR: diagrams, stepper, growth, a tiny GPT in DIR/index.html), or a "
             "quick check of both backward variants"),
    "ops": ("graphdiff.demo", "list the registered ops"),
    "render": ("graphdiff.viz.cli", "render a built-in example graph to DOT/SVG"),
    "compare": ("graphdiff.viz.cli", "compare the two backward variants on an example graph, write a stepper page"),
    "explore": ("graphdiff.viz.cli", "open an example graph (--backward: with its backward graph) in Model Explorer "
                "on localhost, or write its graph JSON (--export FILE.json)"),
    "train": ("graphdiff.lm.cli", "train a GPT or RNN language model"),
    "generate": ("graphdiff.lm.cli", "generate text from a checkpoint"),
    "growth": ("graphdiff.viz.cli", "measure RNN-LM vs Transformer-LM graph growth with sequence length"),
}


def number(kind, lo, what, hi=math.inf):
    """An argparse type: a finite `kind` (int or float) with lo <= value <= hi (never inf, nor NaN);
    argparse turns the ArgumentTypeError into one line and exit 2."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not (lo <= value <= hi and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    return parse


POSITIVE = number(int, 1, "a positive integer")


def add_backend_argument(parser):
    """--backend for every command that computes."""
    parser.add_argument("--backend", choices=("numpy", "cupy", "array_api_strict"), default=None,
                        help="array backend (default: $GRAPHDIFF_BACKEND or numpy)")


def add_tf32_argument(parser):
    """--tf32, for the commands that train or generate (graphdiff's main() applies it)."""
    parser.add_argument("--tf32", action="store_true",
                        help="cupy only: float32 matrix products on TF32 tensor cores (NVIDIA Ampere and newer; "
                             "CuPy's CUPY_TF32=1): faster, with 10-bit mantissas in the products (default: off)")


def use_tf32(args, backend_name):
    """Apply --tf32: CuPy reads CUPY_TF32 at its first float32 product, so this runs before any work.
    Returns an error line when --tf32 is given for a backend other than cupy, else None."""
    if not getattr(args, "tf32", False):
        return None
    if backend_name != "cupy":
        return f"--tf32 is a GPU setting (backend cupy); the backend here is {backend_name}"
    os.environ["CUPY_TF32"] = "1"
    return None


def _top_parser():
    p = argparse.ArgumentParser(prog="graphdiff", description="Autodiff on an explicit computation graph.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        args, _ = _top_parser().parse_known_args(argv)
        if args.version:
            print(importlib.metadata.version("graphdiff"))
            return 0
        if argv and argv[0] in ("-h", "--help"):
            _top_parser().print_help()
            return 0
        _top_parser().print_usage(sys.stderr)
        what = f"unknown command {argv[0]!r}" if argv else "a command is required"
        print(f"graphdiff: {what}; choose one of {', '.join(COMMANDS)} (graphdiff --help describes them)",
              file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        print(f"graphdiff {name}: not available ({e})", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"graphdiff {name}", description=help_)
    getattr(module, f"add_{name}_arguments")(parser)
    args = parser.parse_args(rest)
    if getattr(args, "backend", None):
        from .backend import set_backend
        from .errors import BackendUnavailable
        try:
            set_backend(args.backend)
        except BackendUnavailable as e:
            print(f"graphdiff {name}: {e}", file=sys.stderr)
            return 2
    if getattr(args, "tf32", False):
        from .backend import current_backend_name
        error = use_tf32(args, current_backend_name())
        if error:
            print(f"graphdiff {name}: {error}", file=sys.stderr)
            return 2
    try:
        return getattr(module, f"run_{name}")(args) or 0
    except BrokenPipeError:
        # the reader went away (`graphdiff ops | head -3`): stop quietly, as a killed-by-SIGPIPE tool does;
        # stdout now points at /dev/null so the interpreter's final flush cannot complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    raise SystemExit(main())
