"""
Tests for L{popd.url}: POP URLs (RFC 2384, rule R37), and where popd accepts or gives them.
"""

from __future__ import annotations

import poplib

from twisted.trial.unittest import SynchronousTestCase

from popd.conformance.__main__ import parseArguments
from popd.testing import serve
from popd.url import PopURL


class ParseTests(SynchronousTestCase):
    """
    R37: the URLs of RFC 2384's examples, and what is not a POP URL.
    """

    def test_examples(self) -> None:
        """
        RFC 2384 section 5's examples parse to their user, authentication type, host and port.
        """
        self.assertEqual(
            PopURL.fromString("pop://rg@mail.eudora.com"), PopURL("mail.eudora.com", 110, "rg")
        )
        self.assertEqual(
            PopURL.fromString("pop://rg;AUTH=+APOP@mail.eudora.com:8110"),
            PopURL("mail.eudora.com", 8110, "rg", "+APOP"),
        )
        self.assertEqual(
            PopURL.fromString("pop://baz;AUTH=SCRAM-MD5@foo.bar"),
            PopURL("foo.bar", 110, "baz", "SCRAM-MD5"),
        )
        self.assertEqual(PopURL.fromString("pop://u;auth=*@x").auth, "*")
        self.assertEqual(PopURL.fromString("pop://foo.bar"), PopURL("foo.bar"))

    def test_encoded(self) -> None:
        """
        User names are percent-decoded (an address's C{@}), mechanism names upper-cased, and
        IPv6 literals unbracketed; formatting gives the URL back.
        """
        url = PopURL.fromString("pop://alice%40example.org;auth=plain@[::1]:1110")
        self.assertEqual(url, PopURL("::1", 1110, "alice@example.org", "PLAIN"))
        self.assertEqual(str(url), "pop://alice%40example.org;AUTH=PLAIN@[::1]:1110")
        for text in ["pop://rg;AUTH=+APOP@mail.eudora.com:8110", "pop://foo.bar", "pop://a@b"]:
            self.assertEqual(str(PopURL.fromString(text)), text)

    def test_invalid(self) -> None:
        for text in [
            "imap://rg@host", "pop://", "pop://@host", "pop://rg;AUTH=@host",
            "pop://rg;AUTH=a b@host", "pop://host:99999", "pop://host:x", "pop://a@b@c",
            "pop://%ff@host",
        ]:  # fmt: skip
            self.assertRaises(ValueError, PopURL.fromString, text)


class UsesTests(SynchronousTestCase):
    """
    R37: popd gives POP URLs for its test servers and takes one for the conformance suite.
    """

    def test_testServer(self) -> None:
        """
        L{popd.testing.Server.url} names the server and the user, and a client configured
        from it logs in.
        """
        with serve(users={"bob@example.org": "secret"}) as server:
            url = PopURL.fromString(server.url("bob@example.org"))
            self.assertEqual(
                (url.host, url.port, url.user), (server.host, server.port, "bob@example.org")
            )
            client = poplib.POP3(url.host, url.port)
            assert url.user is not None
            client.user(url.user)
            client.pass_("secret")
            client.quit()

    def test_conformanceCommandLine(self) -> None:
        """
        C{python -m popd.conformance pop://user@host:port} stands for C{--host}, C{--port}
        and C{--user}.
        """
        config = parseArguments(
            ["pop://alice%40example.org@pop.example.org:1110", "--password", "x"]
        )
        self.assertEqual(
            (config.host, config.port, config.user), ("pop.example.org", 1110, "alice@example.org")
        )
