"""Exceptions of the builder: what its commands (build, run, push, deploy...) report as one line."""
from __future__ import annotations

from runtime.errors import KilnError


class BuildError(KilnError):
    """Raised when an image cannot be built: no engine, a bad option, or a failed build step."""


class RunError(KilnError):
    """Raised when a built image cannot be started, or its container stops on its own."""


class LockError(KilnError):
    """Raised when packages cannot be locked, or a requirements.lock does not fit service.yaml."""


class DeployError(KilnError):
    """Raised when manifests cannot be written, or a pod spec fails its rehearsal."""


class PushError(KilnError):
    """Raised when an image cannot be tagged or pushed to a registry."""
