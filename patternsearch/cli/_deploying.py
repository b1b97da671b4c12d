"""``export``: the chosen adaptation as one file that runs with torch alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..deployment import KINDS
from ..exporting import export
from ._command import Command
from ._options import add_json_option, add_storage_options, positive_int
from ._output import show


def _export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="the .pt2 file to write")
    add_storage_options(parser)
    parser.add_argument("--pattern", default=None,
                        help="export this pattern instead of the study's stored select/tune answer")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the pattern's checkpoint (with --pattern; default the shipped one), or the stored "
                             "answer's checkpoint at another path")
    parser.add_argument("--queries", type=positive_int, default=None,
                        help="query examples per class the file accepts (default: the checkpoint's, else 15)")
    parser.add_argument("--kind", choices=KINDS, default="auto",
                        help="aoti: an AOTInductor package (needs a C++ compiler to build); program: a "
                             "torch.export program; auto (default): aoti where a compiler is present")
    parser.add_argument("--data-root", default=None, help="folder holding the benchmark's archives")
    parser.add_argument("--device", default="cpu", help="where the file runs: cpu (default) or cuda")
    add_json_option(parser)


def _export(args: argparse.Namespace) -> int:
    result = export(args.out, storage=args.storage, study_name=args.study, pattern=args.pattern,
                    checkpoint=args.checkpoint, queries=args.queries, kind=args.kind, data_root=args.data_root,
                    device=args.device)
    return show(result, args.json)


COMMANDS = (
    Command("export", "write the chosen adaptation as one file that runs with torch alone",
            "Trace adapt + predict of a pattern on its checkpoint (by default the answer 'tune' or 'select' stored "
            "for the study) and write it as one .pt2 file: called adapter(x_support, y_support, x_query) -> "
            "outputs for the checkpoint's ways and shots and --queries per class, it needs torch only, not "
            "patternsearch. The file is checked against eager adaptation on a validation task before it is kept.",
            _export_options, _export, (
                "patternsearch export adapter.pt2 --data-root DATA          (the stored select/tune answer)",
                "patternsearch export adapter.pt2 --pattern 00011:2 --kind program --data-root DATA")),
)
