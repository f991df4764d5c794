"""A test backend that records every text in one file, shared by every process (bench/chaos.py).

    SMS_BACKEND = "sms.backends.recording.RecordingSmsBackend"
    SMS_RECORDING_FILE = "/tmp/texts.jsonl"

Each accepted text is one JSON line {provider_message_id, from, to, body, at},
appended under an exclusive lock, so several web and worker processes (and
one killed mid-write) leave a file that says exactly what was "sent": a text
sent twice shows twice. `find_sent` reads the file, so the dispatcher's
reconciliation after a crash works across processes too. Numbers, failures
and callbacks behave as in the locmem backend (the callback URL is
/sms/callbacks/recording/, with the same X-Locmem-Secret header).
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from sms.backends.base import SentMessage, SmsError, SmsErrorCode
from sms.backends.locmem import _E164, LocmemSmsBackend


def recording_file() -> str:
    return getattr(settings, "SMS_RECORDING_FILE", "") or os.environ.get("SMS_RECORDING_FILE", "")


def recorded_texts() -> list[dict]:
    """Every text recorded so far, oldest first."""
    path = recording_file()
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        lines = handle.read().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class RecordingSmsBackend(LocmemSmsBackend):
    name = "recording"

    def configuration_problems(self) -> list[str]:
        return [] if recording_file() else ["SMS_RECORDING_FILE must name the file texts are recorded in."]

    def send(self, *, from_number: str, to_number: str, body: str) -> SentMessage:
        self._call("send")
        if not _E164.match(to_number or ""):
            raise SmsError(
                "The recipient's number is not in E.164 form.", permanent=True, code=SmsErrorCode.INVALID_NUMBER
            )
        line = {
            "provider_message_id": f"rec-{uuid.uuid4().hex}",
            "from": from_number,
            "to": to_number,
            "body": body,
            "at": timezone.now().isoformat(),
        }
        with open(recording_file(), "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return SentMessage(provider_message_id=line["provider_message_id"])

    def find_sent(self, *, from_number: str, to_number: str, since: datetime) -> SentMessage | None:
        for text in recorded_texts():
            if (text["from"], text["to"]) == (from_number, to_number) and (
                datetime.fromisoformat(text["at"]) >= since
            ):
                return SentMessage(provider_message_id=text["provider_message_id"])
        return None
