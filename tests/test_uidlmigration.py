"""
Tests for L{popd.uidlmigration}: Dovecot's C{pop3_uidl_format}, as popd reads it.  (The files
of each server, and the migration as sessions see it: L{tests.test_maildir}; against Dovecot
itself: L{tests.test_conformance.DovecotTests}.)
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from popd.uidlmigration import checkSource, fileOf, parse

# UIDVALIDITY 1795300000 is 0x6b021aa0; UID 27 is 0x1b.  The first record has a GUID, the last
# its file name with flags, and one a UIDL saved by pop3_save_uidl.
_UIDLIST = (
    b"3 V1795300000 N28 G0123456789abcdef0123456789abcdef\n"
    b"5 Gdeadbeefdeadbeefdeadbeefdeadbeef W20 :1700000000.M1P1.host\n"
    b"6 W20 :1700000001.M2P2.host,S=17\n"
    b"7 Psaved :1700000002.M3P3.host\n"
    b"27 :Weird-Name:2,S\n"
)


def _uidls(source: str) -> list[bytes]:
    uidls, ignored = parse(source, _UIDLIST)
    assert ignored == 0
    return [uidls[name] for name in sorted(uidls)]


class FormatTests(SynchronousTestCase):
    """
    C{dovecot:FORMAT} gives the UIDLs that Dovecot with C{pop3_uidl_format = FORMAT} gives,
    unless a record saved one.
    """

    def test_default(self) -> None:
        """
        C{dovecot} is Dovecot's default, C{%08Xu%08Xv}: lower-case hex.
        """
        expected = [b"000000056b021aa0", b"000000066b021aa0", b"saved", b"0000001b6b021aa0"]
        self.assertEqual(_uidls("dovecot"), expected)
        self.assertEqual(_uidls("dovecot:%08Xu%08Xv"), expected)

    def test_variables(self) -> None:
        """
        C{%u} and C{%v} are decimal; C{%f} is the base file name; C{%g} is the record's GUID,
        else the base file name; C{%%} and other text are kept.
        """
        self.assertEqual(
            _uidls("dovecot:%v.%u"),
            [b"1795300000.5", b"1795300000.6", b"saved", b"1795300000.27"],
        )
        self.assertEqual(
            _uidls("dovecot:%f"),
            [b"1700000000.M1P1.host", b"1700000001.M2P2.host,S=17", b"saved", b"Weird-Name"],
        )
        self.assertEqual(
            _uidls("dovecot:<%g%%>"),
            [
                b"<deadbeefdeadbeefdeadbeefdeadbeef%>",
                b"<1700000001.M2P2.host,S=17%>",
                b"saved",
                b"<Weird-Name%>",
            ],
        )

    def test_modifiers(self) -> None:
        """
        C{L} and C{U} change the case, C{X} writes a number in lower-case hex; a width pads with
        zeros when it starts with 0, and cuts otherwise.
        """
        self.assertEqual(_uidls("dovecot:%Lf")[3], b"weird-name")
        self.assertEqual(_uidls("dovecot:%Uf")[3], b"WEIRD-NAME")
        self.assertEqual(_uidls("dovecot:%Xu")[3], b"1b")
        self.assertEqual(_uidls("dovecot:%04u")[3], b"0027")
        self.assertEqual(_uidls("dovecot:%3f")[3], b"Wei")
        self.assertEqual(_uidls("dovecot:%08Xv%08Xu")[0], b"6b021aa000000005")

    def test_refused(self) -> None:
        """
        What popd cannot compute from the file, or does not read as Dovecot does, is refused
        when the option is read, naming what; so are unknown servers.
        """
        for source in [
            "dovecot:%m",
            "dovecot:%2.1u",
            "dovecot:%-8u",
            "dovecot:%Xf",
            "dovecot:%{uid}",
            "dovecot:%",
            "dovecot:x%",
            "courier:%u",
            "imap",
        ]:
            self.assertRaises(ValueError, checkSource, source)
        error = self.assertRaises(ValueError, checkSource, "dovecot:%v-%m")
        self.assertIn("'%m'", str(error))
        checkSource(None)

    def test_files(self) -> None:
        """
        Each source names the file its server keeps.
        """
        self.assertEqual(
            [fileOf(source) for source in ["dovecot", "dovecot:%f", "courier"]],
            ["dovecot-uidlist", "dovecot-uidlist", "courierpop3dsizelist"],
        )
