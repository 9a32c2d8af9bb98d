"""Which answer each request gets: the emulator's routes, credential checks and state.

Role:
    ``Router._answer`` turns one recorded request into the whole ``Answer`` that
    ``delivery.deliver`` writes (decisions only; ``emulator/server.py`` is the trio shell
    that reads and writes sockets). Routes: ``/v1/messages`` (streaming and not),
    ``/v1/messages/count_tokens`` and ``/v1/models`` the way api.anthropic.com does (docs/reference/wire.md
    1-4, 6), with deterministic content, usage and model list (``responses``, ``tokens``,
    ``model_list``) and every failure the real service has (``faults``); ``/_emulator/*`` so any
    HTTP client can script an outage and read the log: ``POST /_emulator/faults`` (a JSON list
    of specs), ``GET /_emulator/requests`` (the last ``REQUEST_LOG_LIMIT`` requests as received,
    credentials masked; ``DELETE`` clears it), ``POST /_emulator/reset``; the bootstrap API,
    ``GET /api/claude_cli/bootstrap`` (docs/reference/reference-client.md 4): ``bootstrap_body`` (one
    additional model option by default), after the credential check alone, with faults from its
    own queue (``Emulator.script_bootstrap``, so a gateway's startup fetch never takes a fault
    meant for a Messages request) or the ``x-emulator-fault`` header.
    issue 6: the cloud providers' wire formats (``emulator/cloud_routes.py``), each checking its
    own credential and then answered (faults included) by the same code: Bedrock
    ``/model/{id}/...`` (``emulator/bedrock.py``, SigV4 verified), Vertex
    ``/v1/projects/.../models/{model}:rawPredict`` and its OAuth ``/token``
    (``emulator/vertex.py``), Foundry ``/anthropic/v1/...`` and a managed-identity
    ``/msi/token`` (``emulator/foundry.py``).
Request checks (in order; a failing request consumes no queued fault):
    credential (``x-api-key`` or ``authorization: Bearer``; must be in ``api_keys`` when
    given), ``anthropic-version`` (required, 400 otherwise), ``anthropic-beta``, the body
    (``validation``: every top-level field known and typed), the model (``models``: 404
    ``model: <id>`` when unknown), the fault spec of the header or directive. The cloud
    paths check their own ``anthropic_version`` body field and model ids instead.
State:
    All of it lives on the instance (credentials, issued tokens, fault queues, prompt
    cache, request log), so tests can script and inspect it while the server runs. Token
    expiry and outages are on the trio clock.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import urlsplit

import msgspec
import trio

from . import bedrock, foundry, models, vertex
from .api import (
    DEFAULT_BOOTSTRAP,
    bootstrap_answer,
    count_tokens_answer,
    error_answer,
    json_answer,
    messages_answer,
)
from .cloud_routes import CloudRoutes
from .connection import Request
from .delivery import Answer
from .errors import ErrorResponse, api_error
from .faults import FaultSpecError
from .model_list import MODELS, model_json, models_page
from .record import RecordedRequest
from .responses import JSON, last_user_text
from .script import FaultScript
from .tokens import PromptCache
from .validation import (
    DEFAULT_VERSION,
    check_body,
    check_headers,
    credential,
    parse_body,
    thinking_problem,
)

# Queued faults apply to these two endpoints only.
_MESSAGES: Final = "/v1/messages"
_COUNT_TOKENS: Final = "/v1/messages/count_tokens"
_BOOTSTRAP: Final = "/api/claude_cli/bootstrap"
# The methods each known path answers; any other method gets 405.
_ROUTES: Final[Mapping[str, tuple[str, ...]]] = {
    _MESSAGES: ("POST",),
    _COUNT_TOKENS: ("POST",),
    "/v1/models": ("GET",),
    "/_emulator/faults": ("POST",),
    "/_emulator/requests": ("GET", "DELETE"),
    "/_emulator/reset": ("POST",),
    _BOOTSTRAP: ("GET",),
}
# The request log keeps the most recent requests only, so a long-running emulator (a
# benchmark, a day of manual testing) does not grow without bound.
REQUEST_LOG_LIMIT: Final = 1000


class Router(CloudRoutes):
    """The emulator's state and its answers to requests, without the sockets.

    ``api_keys``: the credentials accepted; None accepts any non-empty one. ``models``: ids
    accepted besides the catalog's (``emulator/models.py``). ``Emulator``
    (``emulator/server.py``) is the one subclass: it serves these answers on loopback and
    adds the test-facing controls.
    """

    def __init__(
        self,
        api_keys: frozenset[str] | None = None,
        *,
        aws_keys: Mapping[str, str] | None = None,
        bedrock_tokens: frozenset[str] | None = None,
        vertex_auth: bool = False,
        google_token_lifetime: int = 3600,
        foundry_keys: frozenset[str] | None = None,
        identity_secret: str | None = None,
        entra_token_lifetime: int = 3600,
        models: Iterable[str] = (),
    ) -> None:
        super().__init__(
            aws_keys=aws_keys,
            bedrock_tokens=bedrock_tokens,
            vertex_auth=vertex_auth,
            google_token_lifetime=google_token_lifetime,
            foundry_keys=foundry_keys,
            identity_secret=identity_secret,
            entra_token_lifetime=entra_token_lifetime,
        )
        self.api_keys = api_keys
        # The last ``REQUEST_LOG_LIMIT`` requests, oldest first; ``_logged`` counts every
        # request since the last reset (so ``RecordedRequest.index`` keeps counting).
        self.requests: list[RecordedRequest] = []
        self._logged = 0
        # Ids accepted besides the catalog's and the listing's (``Emulator(models=...)``).
        self.extra_models = frozenset(models)
        # The shell's: the base URL once ``Emulator.run`` listens, and the event set (and
        # replaced) each time a request is logged.
        self.url: str | None = None
        self._arrived = trio.Event()
        self._script = FaultScript()
        self._cache = PromptCache()
        # Ids keep counting across reset() so a message id is never seen twice.
        self._sequence = itertools.count(1)
        # What GET /api/claude_cli/bootstrap answers; tests may replace it.
        self.bootstrap_body: dict[str, object] = copy.deepcopy(dict(DEFAULT_BOOTSTRAP))
        self._bootstrap_script = FaultScript()
        # What GET /v1/models lists, newest first; tests may replace it.
        self.models: list[JSON] = copy.deepcopy(list(MODELS))

    def _accepted(self) -> frozenset[str]:
        """The ids a request may name besides the catalog's: the extra ones and those listed
        (a test may list a model that is new to the catalog)."""
        return self.extra_models | {str(model["id"]) for model in self.models}

    def reset(self) -> None:
        """Forget queued faults, directive counts, the prompt cache and the request log."""
        self._script.clear()
        self._bootstrap_script.clear()
        self._cache.clear()
        self.clear_requests()

    def clear_requests(self) -> None:
        """Forget the request log (``DELETE /_emulator/requests``); indexes restart at 0."""
        self.requests = []
        self._logged = 0

    def _log(self, record: RecordedRequest) -> None:
        """Append ``record`` to the log, dropping the oldest beyond ``REQUEST_LOG_LIMIT``."""
        self.requests.append(record)
        self._logged += 1
        if len(self.requests) > REQUEST_LOG_LIMIT:
            del self.requests[0]

    def _answer(self, request: Request, record: RecordedRequest, sequence: int) -> Answer:
        """Decide the whole response to ``request`` (state changes happen here)."""
        path = urlsplit(request.target).path
        request_id = record.request_id
        if request.too_large:
            # The rest of the body is unread, so this connection cannot carry another request.
            answer = error_answer(api_error(413), request_id, [(b"connection", b"close")])
            answer.keep_alive = False
            return answer
        if path.startswith("/v1/models/") and request.method == "GET":
            return self._models(request, path.removeprefix("/v1/models/"), request_id)
        bedrock_route = bedrock.route(path)
        if bedrock_route is not None and request.method == "POST":
            return self._bedrock(request, record, sequence, *bedrock_route)
        vertex_route = vertex.route(path)
        if vertex_route is not None and request.method == "POST":
            return self._vertex(request, record, sequence, vertex_route)
        if path == vertex.TOKEN_PATH and request.method == "POST":
            return self._google_token(request, record)
        if path.startswith(foundry.PREFIX + "/v1/messages") and request.method == "POST":
            # issue 6: Foundry's own credential check, then the first-party API as usual.
            if not foundry.authorized(request.headers, self.foundry_keys, self.entra_tokens, trio.current_time()):
                return error_answer(api_error(401), request_id)
            inner = path.removeprefix(foundry.PREFIX)
            return self._messages(request, record, sequence, counting=inner == _COUNT_TOKENS, check_credential=False)
        if path == foundry.IDENTITY_PATH and request.method == "GET":
            return self._entra_token(request)
        allowed = _ROUTES.get(path)
        if allowed is None:
            return error_answer(api_error(404), request_id)
        if request.method not in allowed:
            error = api_error(405, f"Method {request.method} not allowed for {path}")
            return error_answer(error, request_id, [(b"allow", ", ".join(allowed).encode())])
        if path.startswith("/_emulator/"):
            return self._admin(path, request, request_id)
        if path == "/v1/models":
            return self._models(request, None, request_id)
        if path == _BOOTSTRAP:
            return self._bootstrap(request, record)
        return self._messages(request, record, sequence, counting=path == _COUNT_TOKENS)

    def _messages(
        self, request: Request, record: RecordedRequest, sequence: int, *, counting: bool,
        check_credential: bool = True,
    ) -> Answer:
        request_id = record.request_id
        # issue 6: Foundry checks its credential itself (Entra tokens are not API keys).
        problem = check_headers(
            request.headers if check_credential else {**request.headers, "x-api-key": "checked"},
            self.api_keys if check_credential else None,
        )
        if problem is not None:
            return error_answer(problem, request_id)
        # The log already decoded the body; decode again only to word a parse error.
        version = request.headers.get("anthropic-version", DEFAULT_VERSION)
        body = (
            check_body(record.json, counting=counting, version=version)
            if record.json is not None
            else parse_body(request.body, counting=counting, version=version)
        )
        if isinstance(body, ErrorResponse):
            return error_answer(body, request_id)
        model = str(body["model"])
        if not models.known(model, self._accepted()):
            return error_answer(api_error(404, f"model: {model}"), request_id)
        thinking = None if counting else thinking_problem(body, request.headers.get("anthropic-beta", ""))
        if thinking is not None:
            return error_answer(thinking, request_id)
        try:
            directions = self._script.select(
                request.headers, None if counting else last_user_text(body), trio.current_time()
            )
        except FaultSpecError as exc:
            return error_answer(api_error(400, f"emulator fault spec: {exc}"), request_id)
        record.fault = directions.fault
        if counting:
            return count_tokens_answer(body, directions, request_id=request_id)
        return messages_answer(
            body, directions, cache=self._cache, sequence=sequence, request_id=request_id,
            cache_minimum=models.cache_minimum(model),
        )

    def _bootstrap(self, request: Request, record: RecordedRequest) -> Answer:
        # The reference client sends no anthropic-version here: only the credential counts.
        presented = credential(request.headers)
        if presented is None or (self.api_keys is not None and presented not in self.api_keys):
            return error_answer(api_error(401), record.request_id)
        try:
            directions = self._bootstrap_script.select(request.headers, None)
        except FaultSpecError as exc:
            return error_answer(api_error(400, f"emulator fault spec: {exc}"), record.request_id)
        record.fault = directions.fault
        return bootstrap_answer(self.bootstrap_body, directions.fault, request_id=record.request_id)

    def _models(self, request: Request, model_id: str | None, request_id: str) -> Answer:
        problem = check_headers(request.headers, self.api_keys)
        if problem is not None:
            return error_answer(problem, request_id)
        id_header = [(b"request-id", request_id.encode())]
        if model_id is None:
            return json_answer(200, models_page(self.models), id_header)
        model = model_json(model_id, self.models)
        if model is None:
            return error_answer(api_error(404, f"model: {model_id}"), request_id)
        return json_answer(200, msgspec.json.encode(model), id_header)

    def _admin(self, path: str, request: Request, request_id: str) -> Answer:
        id_header = [(b"request-id", request_id.encode())]
        if path == "/_emulator/requests" and request.method == "DELETE":
            self.clear_requests()
            return json_answer(200, b'{"cleared":true}', id_header)
        if path == "/_emulator/requests":
            summaries = [record.summary() for record in self.requests]
            return json_answer(200, msgspec.json.encode(summaries), id_header)
        if path == "/_emulator/reset":
            self.reset()
            return json_answer(200, b'{"reset":true}', id_header)
        try:
            specs = msgspec.json.decode(request.body, type=list[str])
            queued = self._script.extend(specs)
        except (msgspec.DecodeError, msgspec.ValidationError, FaultSpecError) as exc:
            message = f"body must be a JSON list of fault spec strings: {exc}"
            return error_answer(api_error(400, message), request_id)
        payload = {"queued": [fault.spec for fault in queued], "pending": len(self._script.pending)}
        return json_answer(200, msgspec.json.encode(payload), id_header)

