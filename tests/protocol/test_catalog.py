"""The model catalog (protocol/models/catalog.toml): prices equal to Claude Code's, no clamp on an
unknown limit, aliases and ids per provider, the repeated-overload family, the data's rules.

The expected numbers are written here from docs/reference/reference-client-now.md sections 1 and 2, not read
from the data file, so a wrong entry in the file fails these tests.
"""

from __future__ import annotations

import importlib.resources
from decimal import Decimal

import msgspec
import pytest

from protocol.betas import request_betas
from protocol.models.aliases import ModelSettings, output_limits, resolve_model
from protocol.models.catalog import BUILTIN, load_catalog
from protocol.pricing import cost_of
from protocol.request_builder import BuildSettings, SessionLatch, build_request
from protocol.retry import Context, Failure, GiveUp, Retry, RetryPolicy, RetryState, decide
from protocol.usage import Usage

ON = "2026-12-07"  # the reference's date

# docs/reference/reference-client-now.md 2, USD per million tokens: (input, output, 5m write, 1h write, read).
SONNET = ("3", "15", "3.75", "6", "0.30")
OPUS_4 = ("15", "75", "18.75", "30", "1.50")
OPUS_4_5 = ("5", "25", "6.25", "10", "0.50")
TIER_10_50 = ("10", "50", "12.50", "20", "1")
TIER_30_150 = ("30", "150", "37.50", "60", "3")
HAIKU_3_5 = ("0.8", "4", "1", "1.6", "0.08")
HAIKU_4_5 = ("1", "5", "1.25", "2", "0.10")

# Where the gateway charges what the API bills rather than what Claude Code shows: Claude Code
# 2.1.197 prices Sonnet 5 like Sonnet 4.6, but its model page says $2 / $10 (docs/reference/wire.md 10.2).
API_PRICE: dict[str, tuple[str, ...]] = {"claude-sonnet-5": ("2", "10", "2.50", "4", "0.20")}

# docs/reference/reference-client-now.md 1: every model Claude Code offers, by its first-party wire id, with
# its standard tier and (where it has one) its fast tier.
CLAUDE_CODE_MODELS: list[tuple[str, tuple[str, ...], tuple[str, ...] | None]] = [
    ("claude-haiku-4-5-20251001", HAIKU_4_5, None),
    ("claude-sonnet-4-20250514", SONNET, None),
    ("claude-sonnet-4-5-20250929", SONNET, None),
    ("claude-3-7-sonnet-20250219", SONNET, None),
    ("claude-opus-4-5-20251101", OPUS_4_5, None),
    ("claude-opus-4-20250514", OPUS_4, None),
    ("claude-opus-4-1-20250805", OPUS_4, None),
    ("claude-3-5-haiku-20241022", HAIKU_3_5, None),
    ("claude-sonnet-4-6", SONNET, None),
    ("claude-opus-4-6", OPUS_4_5, TIER_30_150),
    ("claude-sonnet-5", SONNET, None),
    ("claude-opus-4-7", OPUS_4_5, TIER_30_150),
    ("claude-opus-4-8", OPUS_4_5, TIER_10_50),
    ("claude-fable-5", TIER_10_50, None),
    ("claude-mythos-5", TIER_10_50, None),
]

USAGE = Usage(
    input_tokens=12_345,
    output_tokens=6_789,
    cache_creation_input_tokens=3_000,
    cache_creation_1h_input_tokens=1_200,
    cache_read_input_tokens=45_678,
    web_search_requests=4,
)


def claude_code_price_pico(usage: Usage, tier: tuple[str, ...]) -> int:
    """docs/reference/reference-client-now.md 2: in + out + read + web_search x 0.01 + writes, the 1h writes
    at the 1h rate and the others at the 5m rate; in picodollars."""
    rate_in, rate_out, rate_5m, rate_1h, rate_read = (Decimal(r) for r in tier)
    one_hour = usage.cache_creation_1h_input_tokens or 0
    five_min = (usage.cache_creation_input_tokens or 0) - one_hour
    usd_times_mtok = (
        (usage.input_tokens or 0) * rate_in
        + (usage.output_tokens or 0) * rate_out
        + (usage.cache_read_input_tokens or 0) * rate_read
        + five_min * rate_5m
        + one_hour * rate_1h
    )
    total = usd_times_mtok * 1_000_000 + (usage.web_search_requests or 0) * Decimal("0.01") * 10**12
    assert total == total.to_integral_value()
    return int(total)


@pytest.mark.parametrize(("model", "standard", "fast"), CLAUDE_CODE_MODELS)
def test_price_equals_claude_codes_for_every_model_it_offers(
    model: str, standard: tuple[str, ...], fast: tuple[str, ...] | None
) -> None:
    if model in API_PRICE:
        # The one documented departure: for tokens, Claude Code shows 1.5x the API's bill.
        tokens = msgspec.structs.replace(USAGE, web_search_requests=0)
        assert claude_code_price_pico(tokens, standard) * 2 == claude_code_price_pico(tokens, API_PRICE[model]) * 3
        standard = API_PRICE[model]
    for form in (model, f"{model}[1m]"):
        cost = cost_of(USAGE, form, on=ON)
        assert not cost.unknown_model
        assert cost.total_pico == claude_code_price_pico(USAGE, standard), form
    fast_usage = Usage(**{**{f: getattr(USAGE, f) for f in USAGE.__struct_fields__}, "speed": "fast"})
    fast_cost = cost_of(fast_usage, model, on=ON)
    assert fast_cost.total_pico == claude_code_price_pico(fast_usage, fast or standard)


@pytest.mark.parametrize(("model", "standard", "fast"), CLAUDE_CODE_MODELS)
def test_provider_ids_price_like_the_first_party(
    model: str, standard: tuple[str, ...], fast: tuple[str, ...] | None
) -> None:
    standard = API_PRICE.get(model, standard)
    spec = BUILTIN.first_party_model(model)
    assert spec is not None
    for provider_id in (spec.bedrock, spec.vertex, spec.foundry):
        if provider_id is not None:
            assert cost_of(USAGE, provider_id, on=ON).total_pico == claude_code_price_pico(USAGE, standard)


def test_an_unknown_model_is_priced_and_flagged() -> None:
    cost = cost_of(USAGE, "claude-opus-9", on=ON)
    assert cost.unknown_model
    assert cost.total_pico == claude_code_price_pico(USAGE, SONNET)


# --- limits and clamps -----------------------------------------------------------------------

# docs/reference/reference-client-now.md 1: (wire id, context window, default output, max output).
LIMITS = [
    ("claude-haiku-4-5-20251001", 200_000, 32_000, 64_000),
    ("claude-sonnet-4-20250514", 200_000, 32_000, 64_000),
    ("claude-opus-4-1-20250805", 200_000, 32_000, 32_000),
    ("claude-3-5-haiku-20241022", 200_000, 8_192, 8_192),
    ("claude-sonnet-4-6", 200_000, 32_000, 128_000),
    ("claude-opus-4-6", 200_000, 64_000, 128_000),
    ("claude-sonnet-5", 1_000_000, 64_000, 128_000),
    ("claude-opus-4-7", 1_000_000, 64_000, 128_000),
    ("claude-opus-4-8", 1_000_000, 64_000, 128_000),
    ("claude-fable-5", 1_000_000, 64_000, 128_000),
    ("claude-mythos-5", 1_000_000, 64_000, 128_000),
]


@pytest.mark.parametrize(("model", "context", "default", "limit"), LIMITS)
def test_limits(model: str, context: int, default: int, limit: int) -> None:
    assert output_limits(model) == (default, limit)
    spec = BUILTIN.model(model)
    assert spec is not None and spec.context_window == context


def build(model: str, max_tokens: int, settings: BuildSettings | None = None) -> tuple[int, list[str]]:
    request = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "x"}]}
    built, _ = build_request(request, settings=settings or BuildSettings(), latch=SessionLatch())
    return built.body["max_tokens"], built.notes


def test_opus_4_8_max_tokens_64000_is_not_clamped() -> None:
    for model in ("claude-opus-4-8", "claude-opus-4-8[1m]", "opus", "us.anthropic.claude-opus-4-8"):
        for asked in (64_000, 128_000):
            max_tokens, notes = build(model, asked)
            assert max_tokens == asked and not any("clamped" in n for n in notes)
    clamped, notes = build("claude-opus-4-8", 200_000)
    assert clamped == 128_000 and any("clamped to 128000" in n for n in notes)


@pytest.mark.parametrize("model", ["claude-opus-9", "my-foundry-deployment", "claude-opus-5", "claude-haiku-5-5"])
def test_a_model_without_a_known_limit_is_never_clamped(model: str) -> None:
    assert build(model, 1_000_000) == (1_000_000, [])
    # CLAUDE_CODE_MAX_OUTPUT_TOKENS is the operator's own cap, and still applies.
    assert build(model, 1_000_000, BuildSettings(max_output_tokens=50_000))[0] == 50_000


# --- aliases and ids per provider ------------------------------------------------------------

# docs/reference/reference-client-now.md 1 "Aliases", as the id each provider is sent.
ALIASES = [
    ("firstParty", "opus", "claude-opus-4-8"),
    ("firstParty", "sonnet", "claude-sonnet-5"),
    ("firstParty", "haiku", "claude-haiku-4-5-20251001"),
    ("firstParty", "fable", "claude-fable-5"),
    ("firstParty", "best", "claude-fable-5"),
    ("bedrock", "opus", "us.anthropic.claude-opus-4-6-v1"),
    ("bedrock", "sonnet", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("bedrock", "haiku", "us.anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("bedrock", "fable", "us.anthropic.claude-fable-5"),
    ("bedrock", "default", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("vertex", "opus", "claude-opus-4-6"),
    ("vertex", "sonnet", "claude-sonnet-4-5@20250929"),
    ("vertex", "haiku", "claude-haiku-4-5@20251001"),
    ("foundry", "opus", "claude-opus-4-6"),
    ("foundry", "sonnet", "claude-sonnet-4-5"),
    ("foundry", "haiku", "claude-haiku-4-5"),
    ("foundry", "default", "claude-sonnet-4-5"),
]


@pytest.mark.parametrize(("provider", "alias", "api_id"), ALIASES)
def test_aliases_per_provider(provider: str, alias: str, api_id: str) -> None:
    assert resolve_model(alias, ModelSettings(), provider).api_id == api_id
    assert resolve_model(f"{alias}[1m]", ModelSettings(), provider).one_m


def test_the_default_model_of_the_first_party_is_opus_4_8_with_1m() -> None:
    resolved = resolve_model("default", ModelSettings())
    assert (resolved.api_id, resolved.one_m) == ("claude-opus-4-8", True)


@pytest.mark.parametrize(
    ("provider", "requested", "api_id"),
    [
        # A first-party id, dated or not, goes to a cloud as that cloud's id (issue: Bedrock
        # refused /model/claude-sonnet-4-5/...).
        ("bedrock", "claude-sonnet-4-5", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("bedrock", "claude-sonnet-4-5-20250929", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("bedrock", "claude-opus-4-8", "us.anthropic.claude-opus-4-8"),
        ("bedrock", "claude-sonnet-4-0", "us.anthropic.claude-sonnet-4-20250514-v1:0"),
        ("vertex", "claude-sonnet-4-5", "claude-sonnet-4-5@20250929"),
        ("vertex", "claude-haiku-4-5", "claude-haiku-4-5@20251001"),
        ("vertex", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet-v2@20241022"),
        ("foundry", "claude-opus-4-1-20250805", "claude-opus-4-1"),
        # The first party takes its own ids and the API's aliases as given.
        ("firstParty", "claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("firstParty", "claude-3-5-haiku-latest", "claude-3-5-haiku-latest"),
        # A provider's own id, or a model the provider does not offer, goes as given.
        ("bedrock", "eu.anthropic.claude-opus-4-6-v1", "eu.anthropic.claude-opus-4-6-v1"),
        ("bedrock", "claude-mythos-5", "claude-mythos-5"),
        ("vertex", "claude-opus-4-6@default", "claude-opus-4-6@default"),
        ("foundry", "My-Deployment", "My-Deployment"),
    ],
)
def test_first_party_ids_are_translated_to_the_provider(provider: str, requested: str, api_id: str) -> None:
    assert resolve_model(requested, ModelSettings(), provider).api_id == api_id


@pytest.mark.parametrize(
    ("region", "api_id"),
    [
        ("us-east-1", "us.anthropic.claude-opus-4-8"),
        ("us-gov-west-1", "us-gov.anthropic.claude-opus-4-8"),
        ("eu-west-1", "eu.anthropic.claude-opus-4-8"),
        ("ap-northeast-1", "jp.anthropic.claude-opus-4-8"),
        ("ap-southeast-2", "au.anthropic.claude-opus-4-8"),
        ("ap-south-1", "apac.anthropic.claude-opus-4-8"),
        ("sa-east-1", "us.anthropic.claude-opus-4-8"),
    ],
)
def test_bedrock_ids_take_the_regions_geo_prefix(region: str, api_id: str) -> None:
    settings = ModelSettings(bedrock_region=region)
    assert resolve_model("claude-opus-4-8", settings, "bedrock").api_id == api_id
    # A model whose Bedrock id has no geo prefix keeps it.
    assert resolve_model("claude-3-haiku-20240307", settings, "bedrock").api_id == "anthropic.claude-3-haiku-20240307-v1:0"


# --- the repeated-overload family ------------------------------------------------------------

OVERLOADED = Failure(kind="status", error_type="overloaded_error", message="Overloaded", status=529)


def third_529(model: str) -> Retry | GiveUp | object:
    current = RetryState(attempt=3, loop_attempt=3, model=model, consecutive_529=2)
    return decide(RetryPolicy(), current, OVERLOADED, Context(now=0.0, rand=0.0))


@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-4-8",
        "claude-opus-4-8[1m]",
        "us.anthropic.claude-opus-4-8",
        "eu.anthropic.claude-opus-4-6-v1",
        "claude-opus-4-5@20251101",
        "claude-opus-4-20250514",
        "claude-fable-5",
        "us.anthropic.claude-fable-5",
        "claude-mythos-5",
        "claude-mythos-5[1m]",
        "claude-opus-5-5",
    ],
)
def test_three_529s_count_for_opus_fable_and_mythos(model: str) -> None:
    result = third_529(model)
    assert isinstance(result, GiveUp) and result.error.type == "repeated_overload"


@pytest.mark.parametrize(
    "model", ["claude-sonnet-5", "claude-sonnet-4-6", "us.anthropic.claude-sonnet-5", "claude-haiku-4-5", "my-opus-deployment"]
)
def test_three_529s_do_not_count_for_other_models(model: str) -> None:
    assert isinstance(third_529(model), Retry)


# --- capabilities ----------------------------------------------------------------------------


def betas_of(model: str, provider: str = "firstParty") -> list[str]:
    return request_betas(
        model=resolve_model(model, ModelSettings(), provider),
        provider=provider,
        source="sdk",
        disable_experimental=False,
        disable_interleaved_thinking=False,
        tool_search=False,
        structured_output=False,
        task_budget=False,
        advisor=False,
    )


def test_effort_beta_for_effort_models_only() -> None:
    for model in ("claude-opus-4-5", "claude-opus-4-8", "claude-sonnet-5", "claude-fable-5", "claude-mythos-5"):
        assert "effort-2025-11-24" in betas_of(model), model
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-9"):
        assert "effort-2025-11-24" not in betas_of(model), model


def test_interleaved_thinking_on_bedrock_but_not_for_haiku_4_5() -> None:
    assert "interleaved-thinking-2025-05-14" in betas_of("claude-sonnet-5", "bedrock")
    assert "interleaved-thinking-2025-05-14" not in betas_of("claude-haiku-4-5", "bedrock")
    assert "interleaved-thinking-2025-05-14" not in betas_of("claude-3-7-sonnet-20250219")


def test_xhigh_is_lowered_to_high_where_the_catalog_says_it_is_unsupported() -> None:
    def effort(model: str) -> object:
        request = {"model": model, "max_tokens": 10, "output_config": {"effort": "xhigh"}, "messages": []}
        built, _ = build_request(request, settings=BuildSettings(), latch=SessionLatch())
        return built.body["output_config"]["effort"]

    assert effort("claude-opus-4-6") == "high"
    assert effort("claude-opus-4-8") == "xhigh"
    assert effort("claude-opus-9") == "xhigh"  # unknown: the upstream decides


# --- the data itself -------------------------------------------------------------------------


def test_the_data_file_names_its_sources_and_date() -> None:
    assert BUILTIN.as_of == "2026-12-07"
    assert any("docs/reference/reference-client-now.md" in source for source in BUILTIN.sources)


def test_every_claude_code_model_is_in_the_catalog_with_its_limits_and_a_price() -> None:
    for model, _, _ in CLAUDE_CODE_MODELS:
        spec = BUILTIN.first_party_model(model)
        assert spec is not None and spec.max_output is not None and BUILTIN.prices(spec.key), model


BUILTIN_TEXT = importlib.resources.files("protocol.models").joinpath("catalog.toml").read_text()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"5 / 6.25 / 10 / 0.50 / 25"', '"5 / 6.25 / 10 / 0.0000001 / 25"'),  # not whole picodollars
        ('capabilities = ["effort", "thinking_off"', 'capabilities = ["telepathy", "thinking_off"'),
        ('opus = "claude-opus-4-8"', 'opus = "claude-opus-99"'),
        ('key = "claude-opus-4-7"', 'key = "claude-opus-4-8"'),
        ('released = "2026-05-28"', 'released = "May 2026"'),
    ],
)
def test_a_broken_data_file_is_refused(old: str, new: str) -> None:
    raw = BUILTIN_TEXT.replace(old, new, 1)
    assert raw != BUILTIN_TEXT
    with pytest.raises(ValueError, match=r"model catalog|picodollars"):
        load_catalog(raw)
