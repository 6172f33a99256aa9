"""The HTTP bodies live in :mod:`codeq.schemas`, shared with the client SDK; re-exported here
for the gateway's routes."""

from codeq.schemas import *  # noqa: F403
from codeq.schemas import __all__ as __all__
