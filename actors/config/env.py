"""Small readers of environment values, shared by ``actors.config.from_env``, ``.settings`` and ``.request``.

Each takes the environment as a mapping (or one value from it) and never reads ``os.environ``
itself: ``config_from_env`` hands the environment in (docs/architecture.md principle 7). Here: the
reference's truthy/falsy switches, integers, ``ANTHROPIC_CUSTOM_HEADERS`` (and which of those
headers are secret), and the standard proxy variables.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol.errors import ConfigError


def environment_proxies(env: Mapping[str, str]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The proxy URL per scheme (``http``, ``https``) and the ``NO_PROXY`` entries, read as
    curl and httpx read them: lower-case names win over upper-case ones, ``ALL_PROXY``
    covers a scheme without its own."""

    def value(name: str) -> str:
        return (env.get(name.lower()) or env.get(name.upper()) or "").strip()

    every = value("all_proxy")
    proxies = tuple((scheme, url) for scheme in ("http", "https") if (url := value(f"{scheme}_proxy") or every))
    no_proxy = tuple(entry.strip().lower() for entry in value("no_proxy").split(",") if entry.strip())
    return proxies, no_proxy


def is_secret_header(name: str) -> bool:
    """A custom header whose value the log redactor must hide (its name says auth, key, ...)."""
    lowered = name.lower()
    return any(word in lowered for word in ("auth", "key", "token", "secret", "cookie"))


def parse_custom_headers(raw: str) -> tuple[tuple[str, str], ...]:
    """``ANTHROPIC_CUSTOM_HEADERS``: ``Name: Value`` per line, split on the first colon."""
    headers: list[tuple[str, str]] = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers.append((name.strip(), value.strip()))
    return tuple(headers)


def is_truthy(value: str | None) -> bool:
    """The reference's ``isEnvTruthy``: 1, true, yes, on (any case, trimmed)."""
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def is_falsy(value: str | None) -> bool:
    """The opposite switch: 0, false, no, off (any case, trimmed); unset is neither."""
    return value is not None and value.strip().lower() in ("0", "false", "no", "off")


def int_env(env: Mapping[str, str], name: str, default: int) -> int:
    """``name`` as an integer, ``default`` when unset or blank.

    Raises:
        ConfigError: the value is not an integer.
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
