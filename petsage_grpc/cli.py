"""The `petsage-grpc` command line: parse arguments, set up logging, run a command.

`serve` exit codes: 0 success; 1 run-time failure (such as a port already in use, or a stop forced
by a second signal); 2 usage error (a bad flag or `PETSAGE_*` value). Errors are one line on
stderr. grpc is imported only once the arguments are known good, after its own logging is set
quiet. The client commands (`probe`, `watch`, `list`, `smoke`) go straight to
`petsage_grpc.commands`, with grpc_health_probe's flags and exit codes, importing nothing else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

from petsage_grpc import __version__
from petsage_grpc.values import argument_type

# Everything else is imported where it is used, so that an exec probe loads only what it needs.

PROG = "petsage-grpc"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are a single line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from petsage_grpc.config import CONFIG_ENV, OPTIONS, Config

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
                type=argument_type(option.parse),
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
                type=argument_type(option.parse),
                metavar=option.metavar,
                help=help_text,
            )
    serve.set_defaults(run=_serve)
    for name, summary in CLIENT_COMMANDS.items():
        commands.add_parser(name, help=f"{summary} (see {PROG} {name} -h)", add_help=False)
    return parser


CLIENT_COMMANDS = {
    "probe": "check a service's health; a drop-in for grpc_health_probe",
    "watch": "stream a service's status changes",
    "list": "list every service and its status",
    "smoke": "run SmokeTest; exit 0 only when OK (for deployment pipelines)",
}


def run() -> NoReturn:
    """The `petsage-grpc` program. It leaves at once when done, without waiting for threads:
    tearing down grpc's channels and threads would cost an exec probe more than the whole probe,
    and a thread a dependency holds (a DNS lookup that hangs) must not hold a server's exit."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments and arguments[0] in CLIENT_COMMANDS:
        verbose = {"-v", "--v", "-v=true", "--v=true"} & set(arguments)
        _quiet_grpc(verbose="ERROR" if verbose else "")
        from petsage_grpc.commands import main as client_main

        return client_main(arguments[0], arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
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


def _quiet_grpc(verbose: str) -> None:
    """Keep grpc's C-core log lines out of our output, unless `verbose` names the level to show
    (or GRPC_VERBOSITY is set).

    The C core writes some errors (TLS handshake failures, for one) straight to file descriptor 2
    whatever GRPC_VERBOSITY says, so that descriptor goes to /dev/null and Python's own stderr
    (our messages and logs) moves to a copy of it. A crash still reports itself there:
    faulthandler writes the Python traceback of a fatal signal (SIGSEGV, SIGABRT, ...) to the copy.
    """
    if "GRPC_VERBOSITY" in os.environ:
        return
    os.environ["GRPC_VERBOSITY"] = verbose or "NONE"
    if verbose:
        return
    sys.stderr.flush()
    ours = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(ours, "w", buffering=1, encoding=sys.stderr.encoding, errors="replace")
    import faulthandler

    faulthandler.enable(file=sys.stderr)


def _setup_logging(level: str, log_format: str) -> None:
    from petsage_grpc.logs import setup_logging

    _quiet_grpc(verbose="INFO" if level == "debug" else "")
    setup_logging(level, log_format)


def _serve(args: argparse.Namespace) -> int:
    from petsage_grpc.config import Config, ConfigError, service_links

    try:
        config = Config.load(vars(args), os.environ)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    _setup_logging(config.log_level, config.log_format)
    for variable in service_links(os.environ):
        logging.getLogger("petsage_grpc.config").warning(
            "ignoring %s=%s: a Kubernetes service link, not a setting (set enableServiceLinks:"
            " false in the pod spec)",
            variable,
            os.environ[variable],
            extra={"event": "setting_ignored", "variable": variable},
        )

    from petsage_grpc.addresses import AddressFileError
    from petsage_grpc.monitor import CheckSetupError
    from petsage_grpc.server import BindError, Server
    from petsage_grpc.tls import TLSError

    try:
        server = Server(config)
    except CheckSetupError as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        return _run_until_stopped(server.serve())
    except (BindError, TLSError, AddressFileError) as exc:
        _error(str(exc))
        return EXIT_FAILURE


def _run_until_stopped(serving: Coroutine[Any, Any, int]) -> int:
    """asyncio.run, but for its last step: it does not wait for the loop's default executor,
    whose threads a dependency can hold (a DNS lookup that hangs) long after the stop."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(serving)
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=1.0))
        loop.close()  # shuts the default executor down without waiting for its threads
