"""
Tests for L{popd.interfaces.Listing}: a listing kept as columns.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from popd.interfaces import Listing, MessageInfo

_INFOS = [MessageInfo(10, b"a"), MessageInfo(20, b"b", 5.0), MessageInfo(30, b"c")]


class ListingTests(SynchronousTestCase):
    """
    A L{Listing} is the sequence of L{MessageInfo} its columns describe.
    """

    def test_sequence(self) -> None:
        """
        Its length, items (by index, negative index and slice) and iteration are those of the
        L{MessageInfo} of each row; a message with no retrieval time has L{None}.
        """
        listing = Listing([10, 20, 30], [b"a", b"b", b"c"], [None, 5.0, None])
        self.assertEqual(len(listing), 3)
        self.assertEqual(list(listing), _INFOS)
        self.assertEqual(listing[1], MessageInfo(20, b"b", 5.0))
        self.assertEqual(listing[-1], MessageInfo(30, b"c"))
        self.assertEqual(list(listing[1:]), _INFOS[1:])
        self.assertRaises(IndexError, listing.__getitem__, 3)
        self.assertIn(MessageInfo(10, b"a"), listing)
        self.assertEqual(list(Listing([1], [b"x"])), [MessageInfo(1, b"x", None)])

    def test_octets(self) -> None:
        """
        C{octets} is the total of the sizes: STAT's answer without a look at each message.
        """
        self.assertEqual(Listing([10, 20, 30], [b"a", b"b", b"c"]).octets, 60)
        self.assertEqual(Listing([], []).octets, 0)

    def test_of(self) -> None:
        """
        L{Listing.of} makes the columns of any sequence of L{MessageInfo}, and returns a
        L{Listing} as it is.
        """
        listing = Listing.of(_INFOS)
        self.assertEqual(
            (listing.sizes, listing.uidls, listing.retrievedAt),
            ([10, 20, 30], [b"a", b"b", b"c"], [None, 5.0, None]),
        )
        self.assertIs(Listing.of(listing), listing)
        self.assertIsNone(Listing.of(_INFOS[:1]).retrievedAt)
        self.assertEqual(len(Listing.of([])), 0)

    def test_unequalColumns(self) -> None:
        """
        Columns of different lengths describe no listing.
        """
        self.assertRaises(ValueError, Listing, [1, 2], [b"a"])
        self.assertRaises(ValueError, Listing, [1], [b"a"], [None, None])
