"""Which files are audio: by extension, case-insensitively."""

AUDIO_EXTENSIONS = frozenset(
    {
        ".mp3",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".mp4",
        ".alac",
        ".aac",
        ".wav",
        ".aiff",
        ".aif",
        ".wma",
        ".ape",
        ".wv",
        ".mpc",
        ".dsf",
    }
)


def is_audio_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in AUDIO_EXTENSIONS
