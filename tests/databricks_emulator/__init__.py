"""A strict emulator of the Databricks REST APIs an MLflow copier uses (see README.md)."""
from .server import Emulator

__all__ = ["Emulator"]
