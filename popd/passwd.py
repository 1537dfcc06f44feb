"""
C{popd-passwd}: print a passwd-file line for a user, as Dovecot's C{doveadm pw} prints a hash::

    popd-passwd [-s SCHEME] [-r ROUNDS] [-p PASSWORD] [USER]
    popd-passwd -l

Without C{-p} the password is read twice from the terminal, or once (one line) from standard
input when that is not a terminal, so that scripts can pipe it in without showing it to C{ps}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from getpass import getpass
from typing import NoReturn

from popd.cred import SCHEMES, hashPassword

_DESCRIPTION = """\
Print a line for a Dovecot-style passwd-file, USER:{SCHEME}hash, or only {SCHEME}hash without
USER, as "doveadm pw" does.  Without -p, the password is read twice from the terminal, or
once from standard input when it is not a terminal.
"""

_EPILOG = """\
example: popd-passwd -s BLF-CRYPT alice@example.org >> /etc/popd/passwd

exit status: 0 when the line was printed, 1 when no password could be read (the two entries
differ, or it is empty), 2 for a usage error (an unknown option or scheme, a cost the scheme
does not take, a user name that a passwd-file cannot hold).
"""


class _Exit(Exception):
    """
    Ends L{main} with a status, after a message for standard error.
    """

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class _Parser(argparse.ArgumentParser):
    """
    An argument parser that raises L{_Exit} rather than exiting, so that L{main} can return
    the status, as its callers and tests expect.
    """

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Exit(status, message or "")


def _parser() -> _Parser:
    parser = _Parser(
        prog="popd-passwd",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-s",
        "--scheme",
        default="SHA512-CRYPT",
        help="the password scheme, case-insensitive, optionally with a .b64 or .hex suffix "
        "(default: %(default)s; -l lists them)",
    )
    parser.add_argument(
        "-r",
        "--rounds",
        type=int,
        help="the cost, for the schemes that take one: the rounds of SHA256-CRYPT and "
        "SHA512-CRYPT, the log2 cost of BLF-CRYPT, the time cost of ARGON2*, the iterations "
        "of SCRAM-*",
    )
    parser.add_argument(
        "-p",
        "--password",
        help="the password (other users may see it in the process list; prefer the prompt "
        "or standard input)",
    )
    parser.add_argument("-l", "--list", action="store_true", help="list the schemes and exit")
    parser.add_argument("user", nargs="?", metavar="USER", help="the user name")
    return parser


def _userNameProblem(user: str) -> str | None:
    """
    Why a passwd-file cannot hold C{user}, if it cannot.
    """
    if not user:
        return "the user name is empty"
    if ":" in user:
        return "a user name cannot contain ':', the passwd-file's field separator"
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in user):
        return "a user name cannot contain line breaks or other control characters"
    if user.startswith("#"):
        return "a user name cannot start with '#', which makes the line a comment"
    if not _isUTF8(user):
        return "the user name is not valid UTF-8"
    return None


def _isUTF8(text: str) -> bool:
    # Command-line arguments that are not UTF-8 arrive with lone surrogates.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _readPassword() -> str:
    """
    Read the password: twice, without echo, from the terminal, or one line of standard input
    when it is not a terminal.

    @raise _Exit: when the entries differ, or there is no password.
    """
    if sys.stdin.isatty():
        try:
            password = getpass("Enter new password: ")
            again = getpass("Retype new password: ")
        except EOFError:
            raise _Exit(1, "popd-passwd: no password given\n") from None
        if password != again:
            raise _Exit(1, "popd-passwd: the passwords do not match\n")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise _Exit(1, "popd-passwd: empty passwords are not allowed\n")
    return password


def _run(arguments: Sequence[str] | None) -> str:
    """
    Do what the command line asks.

    @return: what to print.
    @raise _Exit: to end with an error.
    """
    parser = _parser()
    options = parser.parse_args(arguments)
    if options.list:
        return "\n".join(SCHEMES)
    if options.user is not None:
        problem = _userNameProblem(options.user)
        if problem is not None:
            parser.error(problem)
    # Checked before the password is asked for; encoding suffixes are checked by hashPassword.
    if options.scheme.upper().partition(".")[0] not in SCHEMES:
        parser.error(f"unknown scheme {options.scheme!r} (popd-passwd -l lists them)")
    if options.password is None:
        password = _readPassword()
    elif not options.password:
        parser.error("empty passwords are not allowed")
    else:
        password = options.password
    if not _isUTF8(password):
        parser.error("the password is not valid UTF-8")
    try:
        hashed = hashPassword(password, options.scheme, rounds=options.rounds)
    except ValueError as e:
        parser.error(str(e))
    return hashed if options.user is None else f"{options.user}:{hashed}"


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run C{popd-passwd}.

    @param argv: the arguments, without the program name; L{None} for C{sys.argv[1:]}.
    @return: the exit status: 0 on success, 1 when no password could be read, 2 for a usage
        error.  Errors are reported on standard error in one line, never as a traceback.
    """
    try:
        print(_run(argv))
    except _Exit as e:
        sys.stderr.write(e.message)
        return e.status
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
