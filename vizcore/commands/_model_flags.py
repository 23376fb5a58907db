"""The flags that say what a model's input is, one definition for every command that runs a model (inspect,
render, check, diff, prune): `--size` (one side or H,W), `--preprocess`, `--range`, `--layout`, `--input-shape`,
`--input-node`, `--feed` and `--data`, and the `vizcore.load` keywords they become."""

from __future__ import annotations

import argparse
from typing import Any

DATA_HELP = ("your own inputs: a folder of images, or .npy arrays of one example (C, ...) or a batch (N, C, ...) in "
             "the model's input units")


def add_model_flags(p: argparse.ArgumentParser, size_help: str | None, data_help: str | None = None) -> None:
    """Add the input flags to one command's parser (`size_help` None: the command has its own --size;
    `data_help` None: the command reads no --data)."""
    if size_help is not None:
        p.add_argument("--size", default=None, metavar="PX|H,W", help=size_help)
    p.add_argument("--preprocess", default=None, metavar="imagenet|none|mean=A,B,C;std=D,E,F",
                   help="the model's input normalization (default: its metadata, else ImageNet for 3 channels, "
                   "with a warning)")
    p.add_argument("--range", dest="value_range", default=None, metavar="LO,HI",
                   help="the values the model's input takes: 0,1 | 0,255 | -1,1; no normalization is assumed on top "
                   "unless --preprocess (or the metadata) gives one (default: metadata, else 0,1 with a warning)")
    if data_help is not None:
        p.add_argument("--data", metavar="DIR", help=f"{data_help}; {DATA_HELP}")
    p.add_argument("--layout", default=None, help="the input's layout if detection is wrong: NCHW NHWC NCL NLC NF")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D,D,...",
                   help="fix a graph input's dims (symbolic ones the weights do not determine); repeatable")
    p.add_argument("--input-node", default=None, metavar="TENSOR",
                   help="optimize this inner float tensor (e.g. a text model's embedding output) instead of an input")
    p.add_argument("--feed", action="append", default=[], metavar="NAME=FILE.npy|NAME=NUMBER",
                   help="value of another graph input (default: token ids 0, 1, ..., masks of ones); a fixed-shape "
                   "integer input (a sample rate: sr=16000) is folded into the graph, resolving the Ifs it decides; "
                   "repeatable")


def size_of(args: argparse.Namespace) -> int | tuple[int, ...] | None:
    """`--size` read (OptionError, one line, for a bad value): None, an int, or one value per spatial dim (renders
    refuse sides under 8 themselves; a probe may be smaller)."""
    from ..graph_inputs import parse_size

    return None if args.size is None else parse_size(args.size, least=1)


def given(args: argparse.Namespace) -> bool:
    """Whether any input flag other than --size was given."""
    return bool(args.layout or args.input_shape or args.input_node or args.feed)


#: `load_kwargs`'s default: read `--size` there.
_READ = object()


def load_kwargs(args: argparse.Namespace, size: Any = _READ) -> dict[str, Any]:
    """The `vizcore.load` keywords of the input flags (files given to --feed are read here, one-line errors);
    `size`: the size already read (`render` reads it into its RenderOptions), else `--size` is read here."""
    from ..graph_inputs import parse_shape, read_feed

    return {"size": size_of(args) if size is _READ else size, "layout": args.layout,
            "input_shapes": dict(parse_shape(t) for t in args.input_shape) or None,
            "input": args.input_node, "feeds": dict(read_feed(t) for t in args.feed) or None}


def model_or_path(args: argparse.Namespace, path: str, size: Any) -> Any:
    """`path` itself, or, when input flags were given, the model loaded from it that way (`check` and `diff` then
    run on the model as the user reads it)."""
    if not given(args):
        return path
    from ..api import load

    return load(path, plugins=args.plugins, **load_kwargs(args, size))
