"""What a log line may carry: an exception's frames, never their local variables."""

from __future__ import annotations

import json

from tests.helpers import run_probe

PROBE = """
from shared.observe.logging import configure_logging, get_logger
configure_logging("distributor", json=True)
def deliver():
    smtp_password = "canary-hunter2"
    raise RuntimeError("the server closed the connection")
try:
    deliver()
except RuntimeError:
    get_logger().exception("delivery crashed")
"""


def test_an_exception_is_logged_with_its_frames_but_not_their_locals() -> None:
    done = run_probe(PROBE)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stderr.strip().splitlines()[-1])
    (exception,) = line["exception"]
    assert exception["exc_value"] == "the server closed the connection"
    assert [frame["name"] for frame in exception["frames"]] == ["<module>", "deliver"]
    assert "canary-hunter2" not in done.stderr
