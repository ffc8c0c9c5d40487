"""The shipped alert notifier: the digest by e-mail through Airflow's SMTP connection.

:class:`EmailDigestNotifier` is an Airflow notifier (a ``BaseNotifier``: it extends the SMTP provider's
``SmtpNotifier``, so the mail goes through the provider's ``SmtpHook`` and the connection's host, port, TLS,
login and ``from_email``). It sends the ``alert_digest`` it finds in its context (see
:func:`include.lifecycle.alerts.deliver_pending`) to ``to``, default ``RETRAIN_ALERT_EMAIL_TO`` (comma- or
semicolon-separated), over the connection ``smtp_conn_id``, default ``RETRAIN_SMTP_CONN_ID`` (``smtp_default``);
both are read when it sends, not when the DAG file is parsed. With no recipients it sends nothing and says so in the
task log (the alerts stay recorded and shown on the Model accuracy page).

Which notifiers a DAG uses is the DAG file's ``ALERT_NOTIFIERS`` list: any ``BaseNotifier`` works there (e.g. a
Slack notifier whose text is the template ``{{ alert_digest.text }}``). This module never decides what is an alert.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

from include.lifecycle.alerts import DIGEST_KEY
from include.settings import get_settings

NOBODY_EMAILED = "nobody (no recipients: RETRAIN_ALERT_EMAIL_TO is empty)"


def parse_recipients(value: str | Iterable[str] | None) -> list[str]:
    """``"a@x, b@y; c@z"`` (or a list) -> ``["a@x", "b@y", "c@z"]``; empty parts dropped."""
    if value is None:
        return []
    parts = re.split(r"[,;\s]+", value) if isinstance(value, str) else [str(v).strip() for v in value]
    return [p for p in parts if p]


class EmailDigestNotifier(SmtpNotifier):
    """E-mail the alert digest through Airflow's SMTP connection.

    Args:
        to: Recipients (a string with commas, or a list); default ``RETRAIN_ALERT_EMAIL_TO`` when it sends.
        smtp_conn_id: The Airflow SMTP connection; default ``RETRAIN_SMTP_CONN_ID`` (``smtp_default``).
        from_email: The sender; default the connection's ``from_email`` extra.
        **kwargs: Passed to ``SmtpNotifier`` (cc, bcc, custom_headers...).
    """

    def __init__(self, to: str | Iterable[str] | None = None, *, smtp_conn_id: str | None = None,
                 from_email: str | None = None, **kwargs: Any) -> None:
        super().__init__(to=to or [], from_email=from_email, smtp_conn_id=smtp_conn_id, **kwargs)
        self._to, self._conn_id = to, smtp_conn_id
        #: What the last call did, recorded by the delivery step as ``notified_by``.
        self.last_delivery: str | None = None

    def notify(self, context: Any) -> None:
        """Send ``context["alert_digest"]`` (subject and HTML body are the digest's, never templates)."""
        digest = context.get(DIGEST_KEY)
        if digest is None:
            raise ValueError("EmailDigestNotifier sends alert digests: list it in a DAG's ALERT_NOTIFIERS (the notify "
                             "step gives it the digest), not as a task or DAG callback")
        settings = get_settings()
        recipients = parse_recipients(self._to if self._to is not None else settings.alert_email_to)
        if not recipients:
            self.log.warning("alerts: nobody was e-mailed (%d alert(s) of model %s): set RETRAIN_ALERT_EMAIL_TO "
                             "or give EmailDigestNotifier(to=...) in the DAG's ALERT_NOTIFIERS",
                             len(digest.alerts), digest.model_name)
            self.last_delivery = NOBODY_EMAILED
            return
        self.to = recipients
        self.smtp_conn_id = self._conn_id or settings.smtp_conn_id
        self.__dict__.pop("hook", None)  # the cached hook was built for the connection id given at parse time
        self.subject, self.html_content = digest.subject, digest.html
        try:
            super().notify(context)
        except Exception as exc:  # the task fails and is retried; the alerts stay pending
            raise RuntimeError(f"alerts: e-mail to {', '.join(recipients)} through the Airflow SMTP connection "
                               f"{self.smtp_conn_id!r} failed ({type(exc).__name__}: {exc}); the alerts stay pending "
                               "and the task's retry sends them") from exc
        self.last_delivery = f"email to {', '.join(recipients)} via {self.smtp_conn_id}"
        self.log.info("alerts: digest of %d alert(s) e-mailed to %s", len(digest.alerts), ", ".join(recipients))
