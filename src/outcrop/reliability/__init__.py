"""The reliability suite: what outcrop survives, in figures.

Each module attacks a live server one way and returns counts (tried, held, failed, with
examples of what failed); ``python -m outcrop.reliability`` runs them all and prints the
table that docs/reliability.md holds. The tests run the same code, shorter.

- :mod:`.contract`: requests generated from botocore's service models, then mutated.
- :mod:`.rawsock`: malformed HTTP on a raw socket, huge bodies, slow clients.
- :mod:`.tamper`: every way to break a SigV4 signature, botocore.auth as the oracle.
- :mod:`.soak`: many mixed clients for minutes; memory, fds and slots measured.
- :mod:`.crash`: ``kill -9`` during jobs and database writes, then a restart.
"""
