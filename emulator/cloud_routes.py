"""The cloud providers' routes of the emulator: their credentials, tokens and answers.

issue 6: a Bedrock InvokeModel / CountTokens request (``emulator/bedrock.py``, SigV4
verified), a Vertex rawPredict / streamRawPredict request and its OAuth ``/token``
(``emulator/vertex.py``), and Foundry's managed-identity ``/msi/token``
(``emulator/foundry.py``) each check their own credential; the body is then answered as
``/v1/messages`` would answer it (scripted faults included) and put in the cloud's shape.
``CloudRoutes`` holds that state and those routes; ``Router`` (``emulator/router.py``) is
the one subclass and dispatches to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import trio

from . import bedrock, foundry, models, vertex
from .api import count_tokens_answer, error_answer, messages_answer
from .connection import Request
from .delivery import Answer
from .errors import ErrorResponse, api_error
from .faults import FaultSpecError
from .record import RecordedRequest
from .responses import last_user_text
from .script import FaultScript
from .tokens import PromptCache
from .validation import check_body, thinking_problem


class CloudRoutes:
    """The cloud providers' credentials and routes (see the module docstring)."""

    # ``Router``'s: the fault script and prompt cache the first-party routes share, and the
    # ids a request may name besides the catalog's.
    _script: FaultScript
    _cache: PromptCache
    _accepted: Callable[[], frozenset[str]]

    def __init__(
        self,
        *,
        aws_keys: Mapping[str, str] | None,
        bedrock_tokens: frozenset[str] | None,
        vertex_auth: bool,
        google_token_lifetime: int,
        foundry_keys: frozenset[str] | None,
        identity_secret: str | None,
        entra_token_lifetime: int,
    ) -> None:
        # issue 6: Bedrock's credentials: access key id -> secret (SigV4 is verified), and
        # the API keys accepted as Bearer. Both None: any Bedrock request passes.
        self.aws_keys = aws_keys
        self.bedrock_tokens = bedrock_tokens
        # issue 6: Vertex. With ``vertex_auth`` a Vertex request needs a token issued by
        # ``POST /token`` that has not expired (trio time) nor been revoked.
        self.vertex_auth = vertex_auth
        self.google_token_lifetime = google_token_lifetime
        self.google_tokens: dict[str, float] = {}
        self.token_issuers: list[str] = []
        # issue 6: Foundry. API keys accepted (None: any), and Entra ID tokens issued by the
        # managed-identity endpoint ``GET /msi/token`` (which needs ``identity_secret``).
        self.foundry_keys = foundry_keys
        self.identity_secret = identity_secret
        self.entra_token_lifetime = entra_token_lifetime
        self.entra_tokens: dict[str, float] = {}
        self._entra_issued = 0

    def _bedrock(
        self, request: Request, record: RecordedRequest, sequence: int, model: str, action: str
    ) -> Answer:
        """issue 6: a Bedrock InvokeModel / CountTokens request (``emulator/bedrock.py``)."""
        request_id = record.request_id
        denied = bedrock.check_auth(
            request.method, request.target, request.headers, request.body,
            self.aws_keys, self.bedrock_tokens, request_id,
        )
        if denied is not None:
            return denied
        base = models.bedrock_base(model)
        if base is not None and not models.known(base, self._accepted()) and model not in self._accepted():
            return bedrock.rest_error(400, bedrock.INVALID_MODEL, request_id)
        body = bedrock.first_party_body(request.body, model, action)
        if isinstance(body, str):
            return bedrock.rest_error(400, body, request_id)
        counting = action == "count-tokens"
        # A CountTokens request wraps a whole InvokeModel body (max_tokens and all).
        # Bedrock takes the betas in the body (docs/reference/wire.md 7.2).
        listed = record.json.get("anthropic_beta") if isinstance(record.json, dict) else None
        answer = self._first_party(
            request, record, sequence, body, counting=counting, model=base or model,
            prompt_only=False, betas=",".join(map(str, listed)) if isinstance(listed, list) else "",
        )
        if isinstance(answer, ErrorResponse):
            return bedrock.rest_error(answer.status, bedrock.body_error(answer.message), request_id)
        return bedrock.bedrock_answer(answer, request_id, counting=counting)

    def _first_party(
        self, request: Request, record: RecordedRequest, sequence: int, body: dict[str, object], *,
        counting: bool, model: str, prompt_only: bool | None = None, betas: str | None = None,
    ) -> Answer | ErrorResponse:
        """issue 6: a cloud request's first-party body, answered as ``/v1/messages`` would
        (scripted faults included), or the error for the caller to put in its own shape.
        ``model`` is the first-party id the cloud's model id stands for (cache minimum);
        ``prompt_only`` whether the body has count_tokens' fields (default: ``counting``);
        ``betas`` the betas requested (default: the ``anthropic-beta`` header)."""
        checked = check_body(body, counting=counting if prompt_only is None else prompt_only)
        if isinstance(checked, ErrorResponse):
            return checked
        if betas is None:
            betas = request.headers.get("anthropic-beta", "")
        thinking = None if counting else thinking_problem(checked, betas)
        if thinking is not None:
            return thinking
        try:
            directions = self._script.select(
                request.headers, None if counting else last_user_text(checked), trio.current_time()
            )
        except FaultSpecError as exc:
            return api_error(400, f"emulator fault spec: {exc}")
        record.fault = directions.fault
        if counting:
            return count_tokens_answer(checked, directions, request_id=record.request_id)
        return messages_answer(
            checked, directions, cache=self._cache, sequence=sequence, request_id=record.request_id,
            cache_minimum=models.cache_minimum(model),
        )

    def _entra_token(self, request: Request) -> Answer:
        if self.identity_secret is None or not foundry.identity_request_ok(
            request.target, request.headers, self.identity_secret
        ):
            return foundry.identity_error()
        self._entra_issued += 1
        token = f"eyJ0eXAiOiJKV1QifQ.emulator-{self._entra_issued}"
        self.entra_tokens[token] = trio.current_time() + self.entra_token_lifetime
        return foundry.identity_answer(token, self.entra_token_lifetime)

    def _google_token(self, request: Request, record: RecordedRequest) -> Answer:
        issuer = vertex.assertion_issuer(request.body)
        if issuer is None:
            return vertex.oauth_error(record.request_id)
        self.token_issuers.append(issuer)
        token = f"ya29.emulator-{len(self.token_issuers)}"
        self.google_tokens[token] = trio.current_time() + self.google_token_lifetime
        return vertex.token_answer(token, self.google_token_lifetime)

    def _vertex(self, request: Request, record: RecordedRequest, sequence: int, found: vertex.VertexRoute) -> Answer:
        """issue 6: a Vertex rawPredict / streamRawPredict request (``emulator/vertex.py``)."""
        request_id = record.request_id
        if self.vertex_auth:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            expiry = self.google_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if expiry is None or trio.current_time() >= expiry:
                return vertex.rpc_error(401, vertex.UNAUTHENTICATED, request_id)
        body = vertex.first_party_body(request.body, found)
        if isinstance(body, str):
            return vertex.rpc_error(400, body, request_id)
        # The count-tokens body keeps its model; a predict body got the URL's.
        wire_model = str(body.get("model", ""))
        model = models.vertex_base(wire_model)
        if not models.known(model, self._accepted()) and wire_model not in self._accepted():
            return vertex.model_not_found(found, wire_model, request_id)
        answer = self._first_party(
            request, record, sequence, body, counting=found.model == "count-tokens", model=model
        )
        if isinstance(answer, ErrorResponse):
            return error_answer(answer, request_id)
        return vertex.vertex_answer(answer, request_id)
