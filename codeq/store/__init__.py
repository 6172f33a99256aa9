"""The store: key schema, Lua scripts and the Redis/KVRocks/embedded implementation.

``redis`` is imported only under this package.
"""

from codeq.store.factory import open_store
from codeq.store.keys import KeySchema, PartitionKeys
from codeq.store.protocol import Store
from codeq.store.redis_store import RedisStore, StoreError

__all__ = ["KeySchema", "PartitionKeys", "RedisStore", "Store", "StoreError", "open_store"]
