"""A Dask distributed cluster, reached by its scheduler's address: where chunked work runs off this machine.

The workers must see the files at the same paths (a shared file system or
object store): they read the inputs and write the outputs themselves; only
task descriptions and small results travel through the scheduler.
"""
from __future__ import annotations

import contextlib

from ..errors import DataError, UsageError

EXTRA = "scale"
CONNECT_SECONDS = 10


@contextlib.contextmanager
def client_for(address: str):
    """A ``distributed.Client`` connected to the scheduler at ``address``, closed on the way out."""
    try:
        from distributed import Client
    except ImportError:
        raise UsageError(f"a Dask cluster needs the '{EXTRA}' extra: pip install 'convcli[{EXTRA}]'",
                         subject="--scheduler") from None
    try:
        client = Client(address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError, ValueError) as exc:
        raise DataError(f"cannot reach the Dask scheduler at {address} ({exc})", subject="--scheduler") from None
    try:
        yield client
    finally:
        client.close()
