"""
C{python -m popd.conformance}: run the POP3 conformance suite against a server and print one
line per check, then C{N passed, N failed, N skipped}.  The exit status is 0 when no check
failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from popd.conformance import Config, Security, run
from popd.url import PopURL


def parseArguments(argv: Sequence[str]) -> Config:
    """
    Turn the command line into a L{Config}; argparse exits with status 2 on a usage error.
    """
    parser = argparse.ArgumentParser(
        prog="python -m popd.conformance",
        description="Black-box POP3 conformance checks of the rules R1-R38 of popd's "
        "STANDARDS.md.  The main user's maildrop is only read; checks that delete, lock or "
        "UPDATE run only with a scratch user, and remove one of its messages per run.",
    )
    parser.add_argument(
        "url",
        nargs="?",
        help="the server and main user as a POP URL (RFC 2384), pop://user@host:port, "
        "instead of --host, --port and --user",
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: 995 with --tls, else 110")
    parser.add_argument("--user", help="the main user (read-only)")
    parser.add_argument("--password", required=True)
    security = parser.add_mutually_exclusive_group()
    security.add_argument("--tls", action="store_true", help="implicit TLS (RFC 8314)")
    security.add_argument(
        "--starttls", action="store_true", help="upgrade every connection with STLS (RFC 2595)"
    )
    parser.add_argument("--scratch-user", help="a user whose maildrop may be changed")
    parser.add_argument("--scratch-password")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for any answer (10)"
    )
    parser.add_argument(
        "--cafile", help="verify the server's certificate with these CAs (default: no check)"
    )
    parser.add_argument(
        "--slow", action="store_true", help="also run checks that take over ten minutes (R8)"
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="ID",
        help="run only checks whose id starts with ID (R5, R22.stable); repeatable",
    )
    arguments = parser.parse_args(argv)
    if arguments.url is not None:
        try:
            url = PopURL.fromString(arguments.url)
        except ValueError as e:
            parser.error(str(e))
        if url.user is None:
            parser.error("the POP URL names no user")
        arguments.host, arguments.user = url.host, url.user
        arguments.port = arguments.port or url.port
    if arguments.user is None:
        parser.error("give the main user, with --user or a POP URL")
    if (arguments.scratch_user is None) != (arguments.scratch_password is None):
        parser.error("--scratch-user and --scratch-password go together")
    if arguments.tls:
        mode = Security.TLS
    elif arguments.starttls:
        mode = Security.STARTTLS
    else:
        mode = Security.PLAIN
    port = arguments.port or (995 if arguments.tls else 110)
    return Config(
        host=arguments.host,
        port=port,
        user=arguments.user,
        password=arguments.password,
        security=mode,
        scratchUser=arguments.scratch_user,
        scratchPassword=arguments.scratch_password,
        timeout=arguments.timeout,
        checkTimeout=max(60.0, 6 * arguments.timeout),
        cafile=arguments.cafile,
        slow=arguments.slow,
        select=tuple(arguments.check),
    )


def main(argv: Sequence[str] | None = None) -> int:
    report = run(parseArguments(sys.argv[1:] if argv is None else argv))
    for line in report.lines():
        print(line, flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
