"""
pytest fixtures for the tests of POP3 clients, over L{popd.testing.serve}:

  - C{pop3_server}: a running L{popd.testing.Server} with the user C{user}, password
    C{password}, and an empty mailbox.  Parametrize it indirectly with a dict of C{serve()}'s
    keyword arguments (C{users}, C{mailboxes}, C{tls}, C{stls}, factory options); without
    C{users} it keeps the default user.
  - C{pop3_server_factory}: starts servers from C{serve()}'s arguments, with the same default
    user, for tests that need several.

Every server stops at the end of its test.  popd registers this module with the C{pytest11}
entry point C{popd}, so installing popd is enough; from a source tree, load it with
C{pytest -p popd.pytest_plugin}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from popd.testing import Server

#: The users of a server whose test does not name any.
DEFAULT_USERS = {"user": "password"}


@pytest.fixture
def pop3_server_factory() -> Iterator[Callable[..., Server]]:
    """
    A function that starts a POP3 server from L{popd.testing.serve}'s arguments (with
    L{DEFAULT_USERS} unless C{users} is given); its servers stop at the end of the test.
    """
    # Imported here: pytest loads this plugin in every session, which need not pay for popd
    # and Twisted unless a test asks for a server.
    from popd.testing import serve

    with ExitStack() as servers:

        def start(
            users: Mapping[str, str] | None = DEFAULT_USERS,
            mailboxes: Mapping[str, Iterable[bytes]] | None = None,
            **options: Any,
        ) -> Server:
            return servers.enter_context(serve(users, mailboxes, **options))

        yield start


@pytest.fixture
def pop3_server(
    request: pytest.FixtureRequest, pop3_server_factory: Callable[..., Server]
) -> Server:
    """
    A running POP3 server with L{DEFAULT_USERS} and empty mailboxes, or, when parametrized
    indirectly, started with that parameter as L{popd.testing.serve}'s keyword arguments.
    """
    arguments: dict[str, Any] = getattr(request, "param", {})
    return pop3_server_factory(**arguments)
