"""The `petsage-grpc` command line: parse arguments, set up logging, run a command.

Exit codes: 0 success; 1 run-time failure (such as a port already in use, or a stop forced by a
second signal); 2 usage error (a bad flag or `PETSAGE_*` value). Errors are one line on stderr.
grpc is imported only once the arguments are known good, after its own logging is set quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from petsage_grpc import __version__
from petsage_grpc.config import CONFIG_ENV, OPTIONS, Config, ConfigError

PROG = "petsage-grpc"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are a single line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="PetSage gRPC health and smoke-test service.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = commands.add_parser(
        "serve",
        help="serve SmokeService and grpc.health.v1.Health",
        description="Serve petsage.v1.SmokeService and grpc.health.v1.Health until SIGTERM or "
        "SIGINT, then drain and stop. Every flag can also be set as the environment variable "
        "shown; a flag wins over its variable.",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help=f"a TOML file of settings and [[check]] tables (env {CONFIG_ENV})",
    )
    defaults = Config()
    for option in OPTIONS:
        default = option.show(getattr(defaults, option.field))
        help_text = f"{option.help} (env {option.env}; default {default})"
        if option.repeat:
            serve.add_argument(
                option.flag,
                dest=option.field,
                action="append",
                type=_argument_type(option.parse),
                metavar=option.metavar,
                help=help_text,
            )
        elif option.metavar is None:
            serve.add_argument(
                option.flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            serve.add_argument(
                option.flag,
                type=_argument_type(option.parse),
                metavar=option.metavar,
                help=help_text,
            )
    serve.set_defaults(run=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 128 + 2
    return code


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _setup_logging(level: str) -> None:
    # grpc's C core logs to stderr on its own; keep it quiet unless asked for debug output.
    os.environ.setdefault("GRPC_VERBOSITY", "INFO" if level == "debug" else "NONE")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(args: argparse.Namespace) -> int:
    try:
        config = Config.load(vars(args), os.environ)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    _setup_logging(config.log_level)

    from petsage_grpc.monitor import CheckSetupError
    from petsage_grpc.server import BindError, Server

    try:
        server = Server(config)
    except CheckSetupError as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        return asyncio.run(server.serve())
    except BindError as exc:
        _error(str(exc))
        return EXIT_FAILURE
