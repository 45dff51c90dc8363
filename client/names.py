"""Deployed models by display name or id: the one resolver every command uses.

A deployed model's id is 19 digits; its display name (``shapes-a``) is what a user remembers.
Wherever a deployed model is named (``--deployed-model-id``, ``ab --deployed-models``,
``deploy split``/``undeploy``, ``rollout --from/--to``, ``batch``...), :func:`resolve` takes
either; :func:`label` shows ``name (id)`` beside a bare id in tables and errors.

The names come from the endpoint resource (one control-plane read): Vertex and the emulator
only; a client on one server URL has none (an id is then passed on as it is).

Example:
    names = endpoint_names(aiplatform.Endpoint("123").list_models())
    resolve("shapes-a", names, "--deployed-model-id")  # -> "8000815083038042826"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from client import errors


def endpoint_names(deployed_models: Iterable[Any]) -> dict[str, str]:
    """Deployed model id -> display name ("" when it has none), from ``list_models()``'s items
    (anything with ``id`` and ``display_name``)."""
    return {str(m.id): str(getattr(m, "display_name", "") or "") for m in deployed_models}


def client_names(client: Any) -> dict[str, str] | None:
    """The names on the client's endpoint (one control-plane read); ``None`` through one URL
    (no control plane to ask)."""
    from client.transports import VertexTransport

    transport = getattr(client, "transport", None)
    if not isinstance(transport, VertexTransport):
        return None
    return endpoint_names(transport.endpoint.list_models())


def label(deployed_model_id: str | None, names: Mapping[str, str] | None) -> str:
    """``shapes-a (8000815083038042826)``, or the bare id when it has no name."""
    if not deployed_model_id:
        return "?"
    name = (names or {}).get(deployed_model_id)
    return f"{name} ({deployed_model_id})" if name else deployed_model_id


def listing(names: Mapping[str, str]) -> str:
    """Every deployed model as ``name (id)``, comma-separated; ``none`` when there is none."""
    return ", ".join(label(i, names) for i in names) or "none"


def resolve(
    given: str,
    names: Mapping[str, str] | None,
    what: str,
    unknown: type[errors.VertexYoloError] = errors.ParameterError,
) -> str:
    """A deployed model id, from its id or its display name (when that names one model).

    ``names`` None (a client on one URL, no control plane): ``given`` as it is. Otherwise an unknown name or
    id, or a name that several deployed models share, is a one-line
    :class:`~client.errors.ParameterError` listing them as ``name (id)`` (an unknown one: an
    ``unknown``, e.g. :class:`~client.errors.DeployedModelNotFoundError`)."""
    given = given.strip()
    if names is None or given in names:
        return given
    ids = [dm for dm, name in names.items() if name == given]
    if len(ids) == 1:
        return ids[0]
    if ids:
        raise errors.ParameterError(
            f"{what} {given!r} names {len(ids)} deployed models "
            f"({', '.join(label(i, names) for i in ids)}): give the id"
        )
    message = f"{what} {given!r} is not deployed on this endpoint (deployed: {listing(names)})"
    if issubclass(unknown, errors.APIError):
        raise unknown(message, status=404, deployed_model_id=given)
    raise unknown(message)
