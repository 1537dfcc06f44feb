"""
The C{twistd popd} plugin.

Twisted imports every module in C{twisted/plugins} to list its plugins, so this one stays a single
declaration: it imports nothing from L{popd} (which is loaded only when C{twistd popd} runs) and
never the reactor (which C{twistd} has not chosen yet).
"""

from twisted.application.service import ServiceMaker

# ServiceMaker has no annotations in Twisted.
popd = ServiceMaker(  # type: ignore[no-untyped-call]
    "popd",
    "popd.tap",
    "A POP3 server for Maildirs, with TLS and Dovecot-style password files",
    "popd",
)
