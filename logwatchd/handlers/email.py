"""E-mail over SMTP: one message per alert, or one digest listing every alert of a batch.

Recipients come only from the configuration and are passed as the envelope explicitly, so
nothing rendered from log data can add one. Rendered header values lose control characters
(CR/LF included) and are length-capped. The password is read at send time.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import structlog

from logwatchd.config.handler_settings import EmailSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import (
    clean_header,
    compile_setting,
    credential_path,
    read_secret,
    render_or_fail,
    settings_of,
)
from logwatchd.templates import HostInfo, Template, TemplateError, Templates

log = structlog.get_logger("logwatchd.handlers")

# What a mail says when the configured template fails on an alert.
BUILTIN_SUBJECT = "[{{ alert.severity }}] {{ alert.rule }} on {{ host.name }}"
BUILTIN_BODY = (
    "{{ alert.count }} x {{ alert.rule }} ({{ alert.severity }}) on {{ host.fqdn }}\n"
    "key: {{ alert.key | tojson }}\n"
    "first seen: {{ alert.first_seen }}\nlast seen: {{ alert.last_seen }}\n"
    "suppressed: {{ alert.suppressed }}\n"
    "source: {{ alert.event.source }} {{ alert.event.path or '' }}\n"
    "last line: {{ alert.event.raw }}\n"
)
SUBJECT_LIMIT = 250
_CONTROL_IN_BODY = str.maketrans(dict.fromkeys([*range(0, 9), 11, 12, *range(14, 32), 127], " "))
_BREAKS_IN_VALUE = re.compile("[\r\x85\u2028\u2029]")


def one_line_value(value: object) -> object:
    """Jinja ``finalize`` for bodies: a value from the alert cannot start a line of the mail.

    The mail is sent with CRLF line ends, and a bare CR in a field would end a line there, so
    a log line could forge lines of its own ("Rule: harmless"). A CR that ends a value (a line
    from a CRLF file) is dropped; any other is shown as ``\\r``. A newline inside a value is
    kept (a JSON log's multi-line message; ``tojson(indent=2)``), and the template's own text
    is not touched.
    """
    if not isinstance(value, str):
        return value
    return _BREAKS_IN_VALUE.sub(lambda m: repr(m[0])[1:-1], value.removesuffix("\r"))


class EmailHandler:
    def __init__(self, cfg: HandlerConfig, *, templates: Templates, host: HostInfo) -> None:
        settings = settings_of(cfg, EmailSettings)
        self.name = cfg.name
        self._templates = templates
        self._host = host
        self._smtp = settings.smtp
        self._from = settings.sender or f"logwatchd@{host.fqdn}"
        self._to = list(settings.to)
        self._cc = list(settings.cc)
        self._subject = compile_setting(cfg, templates, "subject", settings.subject, lenient=True)
        bodies = Templates(finalize=one_line_value)
        self._body = compile_setting(cfg, bodies, "body", settings.body, lenient=True)
        self._fallback_subject = templates.compile(BUILTIN_SUBJECT, "builtin subject")
        self._fallback_body = bodies.compile(BUILTIN_BODY, "builtin body")
        self._context = self._tls_context()

    # --- building the message ------------------------------------------------------------

    def message(self, alerts: list[dict[str, Any]]) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._from
        msg["To"] = ", ".join(self._to)
        if self._cc:
            msg["Cc"] = ", ".join(self._cc)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = message_id(alerts, self.name)
        msg["X-Logwatchd-Alert-Ids"] = clean_header(" ".join(a["id"] for a in alerts[:20]))
        if len(alerts) == 1:
            subject, body = self._render_one(alerts[0], alerts)
        else:
            subject, body = self._render_digest(alerts)
        msg["Subject"] = clean_header(subject, SUBJECT_LIMIT)
        msg.set_content(body.translate(_CONTROL_IN_BODY))
        return msg

    def _render_one(self, alert: dict[str, Any], alerts: list[dict[str, Any]]) -> tuple[str, str]:
        failed: list[str] = []
        subject = self._render(self._subject, self._fallback_subject, alert, alerts, failed)
        body = self._render(self._body, self._fallback_body, alert, alerts, failed)
        return subject, _with_notes(body, failed)

    def _render_digest(self, alerts: list[dict[str, Any]]) -> tuple[str, str]:
        rules = sorted({str(a.get("rule")) for a in alerts})
        subject = f"[logwatchd] {len(alerts)} alerts on {self._host.name}: {', '.join(rules)}"
        parts = [f"{len(alerts)} alerts on {self._host.fqdn}\n"]
        for number, alert in enumerate(alerts, 1):
            failed: list[str] = []
            one = self._render(self._subject, self._fallback_subject, alert, alerts, failed)
            text = self._render(self._body, self._fallback_body, alert, alerts, failed)
            heading = f"--- {number}/{len(alerts)}: {clean_header(one, SUBJECT_LIMIT)}"
            parts.append(f"{heading}\n{_with_notes(text, failed)}")
        return subject, "\n".join(parts)

    def _render(self, template: Template, fallback: Template, alert: dict[str, Any],
                alerts: list[dict[str, Any]], failed: list[str]) -> str:  # fmt: skip
        """A template that fails on one alert (a field this event lacks) must not lose the
        alert: the mail goes out with the builtin text and says what went wrong."""
        try:
            return self._templates.render(template, alert, self._host, alerts)
        except TemplateError as exc:
            log.warning("template failed, using the builtin one", handler=self.name,
                        alert_id=alert.get("id"), error=str(exc))  # fmt: skip
            failed.append(str(exc))
            return render_or_fail(self._templates, fallback, alert, self._host, alerts)

    # --- sending -------------------------------------------------------------------------

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        msg = self.message(alerts)
        return {
            "to": self._to + self._cc,
            "subject": msg["Subject"],
            "message_id": msg["Message-ID"],
        }

    def send(self, alerts: list[dict[str, Any]]) -> None:
        msg = self.message(alerts)
        try:
            with self._connect() as smtp:
                self._login(smtp)
                refused = smtp.send_message(msg, from_addr=self._from, to_addrs=self._to + self._cc)
        except smtplib.SMTPAuthenticationError as exc:
            # a wrong or rotated password gets fixed by an admin: keep the alert meanwhile
            raise DeliveryError(f"SMTP authentication failed ({exc.smtp_code})") from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"all recipients refused: {codes}", permanent=all(c >= 500 for c in codes)
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}", permanent=exc.smtp_code >= 500
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"SMTP server lacks a required extension: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {self._smtp.host}: {exc}") from None
        if refused:
            log.warning("some recipients refused", handler=self.name, refused=sorted(refused))

    def _connect(self) -> smtplib.SMTP:
        host, port, timeout = self._smtp.host, self._smtp.port, self._smtp.timeout
        # our name for EHLO, known already: smtplib would otherwise resolve it on every mail
        local = self._host.fqdn
        if self._smtp.tls == "tls":
            return smtplib.SMTP_SSL(
                host, port, local_hostname=local, timeout=timeout, context=self._context
            )
        smtp = smtplib.SMTP(host, port, local_hostname=local, timeout=timeout)
        if self._smtp.tls == "starttls":
            try:
                smtp.starttls(context=self._context)
            except BaseException:
                smtp.close()
                raise
        return smtp

    def _login(self, smtp: smtplib.SMTP) -> None:
        if self._smtp.username:
            smtp.login(self._smtp.username, self._password())

    def _password(self) -> str:
        path = self._smtp.password_file or credential_path(self._smtp.credential or self.name)
        if not path:
            raise DeliveryError("smtp.username is set but no password_file or credential")
        return read_secret(path)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self._smtp.ca_file)
        if not self._smtp.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def close(self) -> None:
        return None


def _with_notes(body: str, failed: list[str]) -> str:
    notes = "".join(f"(the configured template failed: {error})\n" for error in failed)
    return f"{notes}\n{body}" if notes else body


def message_id(alerts: list[dict[str, Any]], handler: str) -> str:
    """Stable per alert (and per digest content), so a re-sent mail is recognisable."""
    if len(alerts) == 1:
        ident = str(alerts[0]["id"])
    else:
        joined = ",".join(sorted(str(a["id"]) for a in alerts))
        ident = "digest-" + hashlib.sha256(joined.encode()).hexdigest()[:32]
    safe_handler = "".join(c if c.isalnum() or c in "-_" else "_" for c in handler)
    return f"<{clean_header(ident, 100).replace(' ', '_')}.{safe_handler}@logwatchd>"


def _text(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
