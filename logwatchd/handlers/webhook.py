"""HTTP webhook: a JSON POST of the alert, a templated body, or Alertmanager's v2 format.

5xx, 408, 429 and connection errors are retried (a Retry-After in seconds or as a date is
passed on); other 4xx are permanent; redirects are not followed (a POST must not silently
turn into a GET elsewhere). Header values rendered from templates lose control characters;
secret header values are read from files at send time.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

import structlog

from logwatchd import __version__
from logwatchd.config.handler_settings import WebhookSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import (
    clean_header,
    compile_setting,
    read_secret,
    render_or_fail,
    settings_of,
)
from logwatchd.handlers.redact import Scrubber, redact_url, url_secrets
from logwatchd.templates import HostInfo, Template, Templates

log = structlog.get_logger("logwatchd.handlers")

RETRYABLE_4XX = frozenset({408, 425, 429})
MAX_LABEL_VALUE = 1024
MAX_ANNOTATION = 4096
RESERVED_LABELS = frozenset({"alertname", "severity", "rule", "host"})
_NOT_LABEL = re.compile(r"[^a-zA-Z0-9_]")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookHandler:
    def __init__(self, cfg: HandlerConfig, *, templates: Templates, host: HostInfo) -> None:
        settings = settings_of(cfg, WebhookSettings)
        self.name = cfg.name
        self._templates = templates
        self._host = host
        self._timeout = cfg.timeout
        self._url = settings.url
        self._shown_url = redact_url(self._url)  # the only form of the URL that is ever shown
        self._scrub = Scrubber(url_secrets(self._url), url=self._url)
        self._method = settings.method
        self._format = settings.format
        self._headers: dict[str, Template] = {
            name: compile_setting(cfg, templates, f"headers.{name}", source, lenient=True)
            for name, source in settings.headers.items()
        }
        self._header_files = settings.header_files
        body = settings.body
        self._body = compile_setting(cfg, templates, "body", body, lenient=True) if body else None
        self._opener = urllib.request.build_opener(_NoRedirect)

    def payload(self, alerts: list[dict[str, Any]]) -> tuple[bytes, str]:
        """The request body and its content type."""
        if self._format == "alertmanager":
            body = [alertmanager_alert(alert, self._host) for alert in alerts]
            return json.dumps(body).encode(), "application/json"
        if self._body is not None:
            text = render_or_fail(self._templates, self._body, alerts[-1], self._host, alerts)
            return text.encode(), "application/json"
        if len(alerts) == 1:
            return json.dumps(alerts[0]).encode(), "application/json"
        digest = {"digest": True, "count": len(alerts), "host": self._host.name, "alerts": alerts}
        return json.dumps(digest).encode(), "application/json"

    def headers(self, alerts: list[dict[str, Any]], content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "User-Agent": f"logwatchd/{__version__}"}
        for name, template in self._headers.items():
            value = render_or_fail(self._templates, template, alerts[-1], self._host, alerts)
            headers[name] = _latin1(clean_header(value))
        for name, path in self._header_files.items():
            headers[name] = _latin1(clean_header(read_secret(path)))
            self._scrub.add_header_value(headers[name])
        return headers

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        body, _ = self.payload(alerts)
        return {"url": self._shown_url, "method": self._method, "body": body.decode()[:2000]}

    def send(self, alerts: list[dict[str, Any]]) -> None:
        """POST; every error is said without the URL's or the headers' secrets."""
        try:
            self._post(alerts)
        except DeliveryError as exc:
            raise DeliveryError(
                self._scrub(str(exc)), permanent=exc.permanent, retry_after=exc.retry_after
            ) from None
        except Exception as exc:  # a library's message (and traceback) may quote a secret
            raise DeliveryError(self._scrub(f"unexpected {type(exc).__name__}: {exc}")) from None

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        body, content_type = self.payload(alerts)
        # the config schema allows only http:// and https:// URLs
        request = urllib.request.Request(  # noqa: S310
            self._url, data=body, method=self._method, headers=self.headers(alerts, content_type)
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            raise _http_failure(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{self._shown_url}: {reason}") from None

    def close(self) -> None:
        return None


def _http_failure(exc: urllib.error.HTTPError) -> DeliveryError:
    code = exc.code
    with exc:
        exc.read(4096)
    retry = code >= 500 or code in RETRYABLE_4XX
    if 300 <= code < 400:
        return DeliveryError(f"HTTP {code}: redirect not followed", permanent=True)
    return DeliveryError(
        f"HTTP {code} {exc.reason}",
        permanent=not retry,
        retry_after=retry_after(exc.headers.get("Retry-After")) if retry else None,
    )


def _latin1(value: str) -> str:
    """http.client sends header values as Latin-1; anything else would raise mid-send."""
    return value.encode("latin-1", "replace").decode("latin-1")


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def alertmanager_alert(alert: dict[str, Any], host: HostInfo) -> dict[str, Any]:
    """One alert in Prometheus Alertmanager's v2 ``postableAlert`` shape."""
    labels = {
        "alertname": str(alert.get("rule")),
        "severity": str(alert.get("severity")),
        "rule": str(alert.get("rule")),
        "host": str(alert.get("host") or host.name),
    }
    for field, value in (alert.get("key") or {}).items():
        name = label_name(str(field))
        if name in RESERVED_LABELS:
            name = f"key_{name}"
        labels[name] = _label_value(value)
    event = alert.get("event") or {}
    key_text = ", ".join(f"{k}={v}" for k, v in (alert.get("key") or {}).items())
    summary = f"{alert.get('count')} x {alert.get('rule')} on {labels['host']}"
    annotations = {
        "summary": _clip(f"{summary} ({key_text})" if key_text else summary, MAX_ANNOTATION),
        "raw": _clip(str(event.get("raw", "")), MAX_ANNOTATION),
        "count": str(alert.get("count")),
        "alert_id": str(alert.get("id")),
        "source": str(event.get("source", "")),
    }
    return {"labels": labels, "annotations": annotations, "startsAt": alert.get("first_seen")}


def label_name(field: str) -> str:
    """Prometheus label names match ``[a-zA-Z_][a-zA-Z0-9_]*`` and ``__`` is reserved."""
    name = _NOT_LABEL.sub("_", field) or "_"
    if name[0].isdigit():
        name = "_" + name
    if name.startswith("__"):
        name = "key_" + name.lstrip("_")
    return name


def _label_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return _clip(text, MAX_LABEL_VALUE)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
