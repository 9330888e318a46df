"""A strict emulator of the Databricks REST APIs an MLflow copier uses (see README.md)."""
from .backend import Backend
from .server import Emulator
from .storage import _Moto

__all__ = ["Emulator", "for_test_session"]


def for_test_session(spares=2):
    """For a process that starts and stops many emulators one after the other (the e2e suite):
    `spares` backing mlflow servers booted ahead of need (Backend.replenish, which every start
    calls; call it to boot them now), one moto server for the whole process, and backing
    servers killed at once on stop (their data is temporary anyway). Every emulator still gets
    its own fresh backing server, buckets and state."""
    Backend.keep_spares(spares)
    Backend.stop_grace = 0
    _Moto.keep_alive = True
