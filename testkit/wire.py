"""What crosses the network between the test machines: a tcpdump capture on their bridge, and the
forms a secret or a file path takes in it when it is sent in clear (as is, or base64 as kombu
encodes message bodies)."""

from __future__ import annotations

import base64
import contextlib
import signal
import subprocess
import time
from pathlib import Path


@contextlib.contextmanager
def capture(interface: str, host: str, ports: tuple[int, ...], pcap: Path):
    """tcpdump on `interface` (full packets) of the traffic to and from `host` on `ports`, into
    `pcap`, while the block runs."""
    expression = f"host {host} and (" + " or ".join(f"tcp port {port}" for port in ports) + ")"
    proc = subprocess.Popen(
        ["tcpdump", "-i", interface, "-s", "0", "-U", "-n", "-w", str(pcap), expression],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not pcap.exists():  # tcpdump writes its header once it listens
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"tcpdump did not start: {proc.stderr.read().decode(errors='replace')}")
        time.sleep(0.1)
    try:
        yield pcap
    finally:
        time.sleep(1)  # the last packets of the block
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def clear_forms(text: str) -> list[bytes]:
    """`text` as it would appear in a capture if sent in clear: its bytes, and its base64 at each
    of the 3 alignments (the part of the encoding that depends on `text` alone)."""
    raw = text.encode()
    forms = [raw]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        start = -(-offset // 3) * 4  # the first group made of text bytes only
        end = (offset + len(raw)) // 3 * 4
        if end - start >= 8:
            forms.append(encoded[start:end])
    return forms


def found_in(pcap: Path, texts: dict[str, str]) -> list[str]:
    """The names of `texts` that appear in clear (any of clear_forms) in the capture."""
    data = pcap.read_bytes()
    return [name for name, text in texts.items() if any(form in data for form in clear_forms(text))]


def tls_records(pcap: Path) -> int:
    """How many TLS 1.2/1.3 application-data record headers the capture holds (0x17 0x03 0x03)."""
    return pcap.read_bytes().count(b"\x17\x03\x03")
