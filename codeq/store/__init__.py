"""The store: key schema, Lua scripts and the Redis/KVRocks/embedded implementation.

``redis`` is imported only under this package.
"""

from codeq.store.errors import StoreError
from codeq.store.factory import check_store, open_store
from codeq.store.handshake import StoreHandshakeError
from codeq.store.keys import KeySchema, PartitionKeys
from codeq.store.protocol import Store
from codeq.store.redis_store import RedisStore

__all__ = [
    "KeySchema",
    "PartitionKeys",
    "RedisStore",
    "Store",
    "StoreError",
    "StoreHandshakeError",
    "check_store",
    "open_store",
]
