"""The web console at ``/console``: a static single-page app plus sign-in and two read-outs.

The pages call the same JSON APIs every client uses (``/v1`` streaming chat, the Bedrock
control plane, retrieve, apply-guardrail); this package adds only what a browser needs on
top: a session cookie in place of a key (:mod:`.sessions`, :mod:`.auth`), the assets
(:mod:`.app`), a rolling history of the server's own metrics (:mod:`.usage`) and a
catalog read-out that joins catalog, store and loaded models (:mod:`.models`).
"""

from outcrop.console.app import ConsoleApp
from outcrop.console.auth import SessionAuthenticator
from outcrop.console.sessions import ConsoleSessions

__all__ = ["ConsoleApp", "ConsoleSessions", "SessionAuthenticator"]
