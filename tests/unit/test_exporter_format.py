import math

from backend_worker.exporter import render


def sample_values(text: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in text.splitlines() if not line.startswith("#")}


def test_render_keeps_every_digit_of_timestamps_and_sizes():
    text = render(
        [
            ("soniquebay_backup_last_success_timestamp_seconds", {}, 1796495170.3419924),
            ("soniquebay_backup_size_bytes", {}, 123456789.0),
            ("soniquebay_backup_age_seconds", {}, math.inf),
        ]
    )
    assert sample_values(text) == {
        "soniquebay_backup_last_success_timestamp_seconds": "1796495170.3419924",
        "soniquebay_backup_size_bytes": "123456789",
        "soniquebay_backup_age_seconds": "+Inf",
    }
