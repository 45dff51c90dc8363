"""The emulator's info file: its schema is :mod:`client.info`, shared with the client library
that reads it (``--emulator-info``); re-exported here for the emulator's own modules."""

from client.info import NO_PROXY, EmulatorInfo, ReplicaState, ReplicaStatus, ScaleEvent

__all__ = ["NO_PROXY", "EmulatorInfo", "ReplicaState", "ReplicaStatus", "ScaleEvent"]
