"""rsyslog's folded repeats: ``message repeated 5 times: [ Failed password for root ...]``.

With ``$RepeatedMsgReduction on`` rsyslog logs a message once, then, instead of its repeats,
one line saying how many followed (the message cut at 800 characters). The syslog and
rfc5424 parsers unfold it: the message inside the brackets is the event's ``message``, and
``repeated`` (an int) says how many events the line stands for, so a brute force of six
tries logged as one failure and "message repeated 5 times" counts six.

syslog-ng's ``Last message '...' repeated N times`` quotes only the start of the message, so
there is nothing to unfold in it.
"""

from __future__ import annotations

import re

from logwatchd.parsers.base import Fields

REPEATED = "repeated"  # the field: how many events the line stands for
MAX_REPEATED = 1000  # a line counts at most this many times, whatever it claims

_FOLDED = re.compile(r"message repeated (\d{1,9}) times: \[ ?(.*)\]", re.DOTALL)


def unfold(fields: Fields) -> Fields:
    """The fields with a folded message unfolded (in place); as they were otherwise."""
    message = fields["message"]
    if not message.startswith("message repeated "):
        return fields
    found = _FOLDED.fullmatch(message)
    if found is not None and int(found.group(1)) > 0:
        fields["message"] = found.group(2)
        fields[REPEATED] = min(int(found.group(1)), MAX_REPEATED)
    return fields
