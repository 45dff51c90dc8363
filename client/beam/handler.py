"""A Beam model handler for this project's endpoint: ``RunInference(YoloModelHandler(...))``.

:class:`YoloModelHandler` is one of Beam's remote model handlers (``RemoteModelHandler``: the
client made once per worker process by :meth:`~YoloModelHandler.create_client`, client-side
throttling, retries with exponential backoff around :meth:`~YoloModelHandler.request`, and Beam's
``BatchElements`` batching). What it adds:

* Elements: image bytes, a local path, a ``gs://`` URI (sent as ``{"gcsUri": ...}``: the server
  reads the object, workers move no pixels; ``send="bytes"`` reads it on the worker instead), or
  a ``(key, image)`` pair whose key names the line.
* Any image route the client serves (``route="detect"``, ``"segment"``, and every route the client
  has a method for: the answer is decoded by that method, so each task's results are its own
  typed Structs), with its parameters (checked against the contract when the handler is made).
* One deployed model for the whole job: the pinned one (``deployed_model_id``), or, untargeted, the
  one that answers a ``/models`` call when the handler is made (on the machine that builds the
  pipeline): every worker pins that one, as ``python -m client batch`` does.
* A Beam batch is sent as few requests as fit: up to ``max_images`` images and ``max_body_bytes``
  a request (the endpoint's body limit: 10 MB on a dedicated endpoint).
* Errors: an input the server refuses for itself (a corrupt image, an object missing: the batch
  engine's ``INPUT_ERRORS``) or that the worker cannot read is an error line; in a request of
  several images such a refusal sends each of them again alone, so only the bad input gets the
  error. 429, 5xx and connection failures are retried (the client's quick retries, then Beam's
  exponential backoff); any other 4xx (a bad parameter, a refused token) fails at once, with the
  server's one-line problem.

Each element gives a ``PredictionResult`` whose ``inference`` is the input's
:class:`~client.batch.BatchLine` (its typed ``result``, or its ``error``; who answered; the
parameters), made by the same functions as ``python -m client batch``'s lines, and whose
``model_id`` is the deployed model that answered.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from apache_beam.ml.inference.base import PredictionResult, RemoteModelHandler

from client import errors
from client._client import ROUTE_PARAMETERS, Client, _validate
from client.batch.engine import (
    BatchError,
    BatchLine,
    given,
    problem_line,
    result_line,
    unreadable,
    unreadable_line,
)
from client.batch.inputs import read_input

Element = bytes | str | tuple[Any, bytes | str]
Send = Literal["bytes", "uri"]
#: Vertex's payload limit on a dedicated endpoint is 10 MB; a request is packed to this much
#: (multipart's per-image headers and a JSON body's brackets stay well within the rest)
MAX_BODY_BYTES = 9_500_000
MAX_IMAGES = 16  # the server's default SERVE_MAX_IMAGES
_PART_OVERHEAD = 256  # multipart headers of one image
_URI_OVERHEAD = 32  # {"image": {"gcsUri": "..."}},
#: routes the handler does not send images to (not one result per image)
_NOT_BATCH = ("/annotate", "/stream")


def routes() -> list[str]:
    """The image routes the handler can call: every route of the contract with a client method
    that answers one result per image (``detect``, ``segment``, ...)."""
    return [
        r.lstrip("/")
        for r in ROUTE_PARAMETERS
        if r not in _NOT_BATCH and callable(getattr(Client, r.lstrip("/"), None))
    ]


def retryable(exc: BaseException) -> bool:
    """What Beam retries with backoff: 429, 5xx, connection failures and timeouts (an
    inference call can be sent again). Any other error (a 4xx) fails the bundle at once."""
    return isinstance(
        exc,
        errors.RateLimitError
        | errors.UnavailableError
        | errors.ServerError
        | errors.ConnectionError
        | errors.TimeoutError,
    )


@dataclass
class _Item:
    """One element on its way: its line's name and what is sent (bytes or a gs:// URI), or its
    line already (it could not be read)."""

    example: Any
    name: str
    payload: bytes | str | None = None
    line: BatchLine | None = None

    @property
    def weight(self) -> int:
        if isinstance(self.payload, str):
            return len(self.payload) + _URI_OVERHEAD
        return len(self.payload or b"") + _PART_OVERHEAD


class YoloModelHandler(RemoteModelHandler[Element, PredictionResult, Client]):
    """Calls a vertex-yolo endpoint from Beam's ``RunInference``.

    Args:
        endpoint: the Vertex endpoint id or resource name (with ``project``, ``location``;
            ``api_endpoint``: a control-plane URL such as the emulator's, ``ca_cert``: the CA
            bundle its data plane needs). Or ``url``: one server, no Vertex.
        route: the route to call (:func:`routes`).
        params: its parameters (``{"conf": 0.5, "classes": ["circle"]}``), checked now.
        deployed_model_id: pin this deployed model; by default the one that answers an
            untargeted ``/models`` call now serves the whole job.
        send: ``"uri"`` (default): ``gs://`` inputs go as URIs for the server to read;
            ``"bytes"``: the worker reads them and sends their bytes (local paths and bytes
            always go as bytes).
        max_images, max_body_bytes: the most images and bytes one request carries.
        timeout, client_retries: the client's seconds per call and quick retries (429, 503,
            connection failures) before Beam's own.
        min_batch_size, max_batch_size, max_batch_duration_secs: Beam's ``BatchElements``
            (a batch is split into requests as above; default at most ``max_images``).
        **kwargs: ``RemoteModelHandler``'s (``num_retries``, ``throttle_delay_secs``, ...).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        project: str | None = None,
        location: str | None = None,
        api_endpoint: str | None = None,
        ca_cert: str | None = None,
        url: str | None = None,
        route: str = "detect",
        params: Mapping[str, Any] | None = None,
        deployed_model_id: str | None = None,
        send: Send = "uri",
        max_images: int = MAX_IMAGES,
        max_body_bytes: int = MAX_BODY_BYTES,
        timeout: float = 120.0,
        client_retries: int = 2,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        max_batch_duration_secs: int | None = None,
        **kwargs: Any,
    ) -> None:
        if (endpoint is None) == (url is None):
            raise errors.ParameterError("give the handler an endpoint (Vertex) or a url")
        if route not in routes():
            raise errors.ParameterError(f"route {route!r}: one of {', '.join(routes())}")
        if send not in ("bytes", "uri"):
            raise errors.ParameterError(f"send must be bytes or uri, not {send!r}")
        if not 1 <= max_images <= 256 or max_body_bytes < 1024:
            raise errors.ParameterError(
                f"max_images {max_images} (1 to 256), max_body_bytes {max_body_bytes} (>= 1024)"
            )
        self.endpoint, self.project, self.location = endpoint, project, location
        self.api_endpoint, self.ca_cert, self.url = api_endpoint, ca_cert, url
        self.route, self.send = route, send
        self.params = _validate(ROUTE_PARAMETERS["/" + route], params or {})
        self.max_images, self.max_body_bytes = max_images, max_body_bytes
        self.timeout, self.client_retries = timeout, client_retries
        self._batching: dict[str, Any] = {"max_batch_size": max_batch_size or max_images}
        if min_batch_size is not None:
            self._batching["min_batch_size"] = min_batch_size
        if max_batch_duration_secs is not None:
            self._batching["max_batch_duration_secs"] = max_batch_duration_secs
        if deployed_model_id is None:  # the whole job on the one that answers now
            with self.create_client() as client:
                deployed_model_id = client.models().deployed_model_id
        self.deployed_model_id = deployed_model_id
        kwargs.setdefault("namespace", "vertex-yolo")
        kwargs.setdefault("retry_filter", retryable)
        super().__init__(**kwargs)

    # -- RemoteModelHandler -----------------------------------------------------------------

    def create_client(self) -> Client:
        """The client (once per worker process; Beam shares it between the worker's threads)."""
        options: dict[str, Any] = {"timeout": self.timeout, "retries": self.client_retries}
        if self.url is not None:
            return Client.from_url(self.url, verify=self.ca_cert, **options)
        if self.ca_cert:  # the SDK's data plane (requests) reads the CA bundle from here
            os.environ["REQUESTS_CA_BUNDLE"] = self.ca_cert
        assert self.endpoint is not None
        return Client.from_vertex(
            endpoint=self.endpoint,
            project=self.project,
            location=self.location,
            api_endpoint=self.api_endpoint,
            **options,
        )

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self._batching

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        """``RunInference(..., inference_args={...})``: more parameters, checked like
        ``params`` (they win over them)."""
        _validate(ROUTE_PARAMETERS["/" + self.route], {**self.params, **(inference_args or {})})

    def request(
        self,
        batch: Sequence[Element],
        model: Client,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """One ``PredictionResult`` per element, in order (the calls: see the module)."""
        params = {**self.params, **(inference_args or {})}
        items = [self._item(example) for example in batch]
        for request in self._pack([i for i in items if i.line is None]):
            self._send(model, request, params)
        return [
            PredictionResult(example=i.example, inference=i.line, model_id=self.deployed_model_id)
            for i in items
        ]

    # -- the work -----------------------------------------------------------------------------

    def _item(self, example: Element) -> _Item:
        image: Any = example
        key: Any = None
        if isinstance(example, tuple):
            if len(example) != 2:
                raise errors.ParameterError(
                    f"a keyed element is (key, image), not a {len(example)}-tuple"
                )
            key, image = example
        if isinstance(image, bytes | bytearray | memoryview):
            data = bytes(image)
            name = str(key) if key is not None else f"sha1:{hashlib.sha1(data).hexdigest()}"
            return _Item(example, name, data)
        if not isinstance(image, str):
            raise errors.ParameterError(
                f"an element is image bytes, a path, a gs:// URI or (key, image), not "
                f"{type(image).__qualname__}"
            )
        name = str(key) if key is not None else image
        if image.startswith("gs://") and self.send == "uri":
            return _Item(example, name, image)
        try:
            return _Item(example, name, read_input(image))
        except Exception as exc:
            if not unreadable(exc):
                raise  # Cloud Storage down, credentials refused: no input would escape it
            return _Item(example, name, line=unreadable_line(name, exc, self.params))

    def _pack(self, items: list[_Item]) -> list[list[_Item]]:
        """Requests of up to ``max_images`` images and ``max_body_bytes``, URIs and bytes apart
        (a request with a URI is JSON, where bytes would be base64); an image over the limit
        alone is an error line, never sent."""
        requests: list[list[_Item]] = []
        for uris in (True, False):
            current: list[_Item] = []
            weight = 0
            for item in items:
                if isinstance(item.payload, str) != uris:
                    continue
                if item.weight > self.max_body_bytes:
                    item.line = BatchLine(
                        input=item.name,
                        error=BatchError(
                            code="payload-too-large",
                            detail=f"{item.name}: {item.weight} bytes, over the "
                            f"{self.max_body_bytes} a request may carry",
                        ),
                        params=given(self.params),
                    )
                    continue
                if current and (
                    len(current) >= self.max_images or weight + item.weight > self.max_body_bytes
                ):
                    requests.append(current)
                    current, weight = [], 0
                current.append(item)
                weight += item.weight
            if current:
                requests.append(current)
        return requests

    def _send(self, client: Client, items: list[_Item], params: dict[str, Any]) -> None:
        """One request for ``items``; each gets its line."""
        call = getattr(client, self.route)
        images = [item.payload for item in items]
        try:
            answer = call(
                images if len(images) > 1 else images[0],
                deployed_model_id=self.deployed_model_id,
                **params,
            )
        except errors.APIError as exc:
            if problem_line(items[0].name, exc, self.deployed_model_id) is None:
                raise  # 5xx, 429, a refused token, a bad parameter: Beam retries or fails
            if len(items) > 1:  # which one? each alone
                for item in items:
                    self._send(client, [item], params)
                return
            items[0].line = problem_line(items[0].name, exc, self.deployed_model_id, params)
            return
        for item, result in zip(items, answer.results, strict=True):
            item.line = result_line(item.name, answer, result, params)
