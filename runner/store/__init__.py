"""All disk I/O of a run folder: atomic files, the journal, the lock, batches, decisions, caches.

Nothing here knows the state machine's rules; see docs/ARCHITECTURE.md for the folder layout.
"""

from .atomic import create_exclusive, fsync_dir, write_atomic, write_json_atomic
from .batches import BatchStore, derive_seed
from .failpoints import crash_point
from .journal import Journal, JournalRead
from .kv import KVStore
from .lock import Holder, RunLock, Takeover, holder_alive, read_holder
from .run_folder import RunFolder, list_runs, new_run_id

__all__ = [
    "BatchStore",
    "Holder",
    "Journal",
    "JournalRead",
    "KVStore",
    "RunFolder",
    "RunLock",
    "Takeover",
    "crash_point",
    "create_exclusive",
    "derive_seed",
    "fsync_dir",
    "holder_alive",
    "list_runs",
    "new_run_id",
    "read_holder",
    "write_atomic",
    "write_json_atomic",
]
