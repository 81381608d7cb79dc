"""Fetch one missing video with yt-dlp's Python API, given only a validated YouTube id.

    download_video("dQw4w9WgXcQ", media_root)                         # from YouTube
    download_video(id, media_root, "http://127.0.0.1:8000/{id}.mp4")  # any URL template

The id is checked against the 11-character alphabet before it is put into the URL template, so
nothing else reaches yt-dlp. The file lands as `<media-root>/<id>.<ext>` (yt-dlp writes `.part`
first and renames, so a killed download never looks like media). There is no ffmpeg binary, so
only formats that carry audio and video in one file are asked for (no merging). This function
tries once; retries with backoff belong to the caller (the Prefect task in flows/ingest.py).

    python -m s2f.ingest.download YOUTUBE_ID MEDIA_ROOT [URL_TEMPLATE]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from s2f.ingest.manifest import is_valid_youtube_id
from s2f.ingest.media import MEDIA_EXTENSIONS, MediaError, find_media

DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={id}"
# Progressive (audio+video) formats only: merging separate streams needs an ffmpeg binary.
FORMAT = ("best[ext=mp4][acodec!=none][vcodec!=none]/best[ext=webm][acodec!=none][vcodec!=none]"
          "/best[ext=mp4]/best[ext=webm]/best")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# No video is fetched past this size: yt-dlp refuses one whose Content-Length says more
# (`max_filesize`), and a progress hook stops one sent without a length once it gets there.
# An hour of 720p progressive MP4 is about 1 GB.
MAX_DOWNLOAD_BYTES = 2 << 30
MAX_REASON_CHARS = 300


class DownloadFailed(Exception):
    """yt-dlp could not fetch the video; the message is the reason to record."""


def video_url(youtube_id: str, url_template: str = DEFAULT_URL_TEMPLATE) -> str:
    if not is_valid_youtube_id(youtube_id):
        raise DownloadFailed(f"refusing to download an invalid YouTube id: {youtube_id!r}")
    if "{id}" not in url_template:
        raise ValueError(f"URL template needs an {{id}} placeholder: {url_template!r}")
    return url_template.replace("{id}", youtube_id)


def _clean(message: str) -> str:
    message = _ANSI.sub("", message).strip()
    return message if len(message) <= MAX_REASON_CHARS else message[:MAX_REASON_CHARS] + "..."


def download_video(youtube_id: str, media_root: Path,
                   url_template: str = DEFAULT_URL_TEMPLATE, timeout_s: float = 30.0) -> Path:
    """Download one video into the media root; returns its path. Raises DownloadFailed."""
    import yt_dlp  # heavy import, only when a download is asked for

    url = video_url(youtube_id, url_template)
    media_root = Path(media_root).resolve()
    media_root.mkdir(parents=True, exist_ok=True)
    logger = _QuietLogger()
    options: dict[str, Any] = {
        "outtmpl": str(media_root / f"{youtube_id}.%(ext)s"),
        "format": FORMAT,
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "retries": 0,  # retried by the caller, with backoff
        "fragment_retries": 0,
        "socket_timeout": timeout_s,
        "overwrites": False,
        "logger": logger,
        "max_filesize": MAX_DOWNLOAD_BYTES,
        "progress_hooks": [_stop_past(MAX_DOWNLOAD_BYTES, url)],
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=True)
    except yt_dlp.utils.YoutubeDLError as exc:
        raise DownloadFailed(f"{url}: {_clean(str(exc))}") from exc
    except DownloadFailed:
        for part in media_root.glob(f"{youtube_id}.*.part"):
            part.unlink(missing_ok=True)  # stopped by the hook: nothing half-fetched stays
        raise
    ext = (info or {}).get("ext")
    try:
        return find_media(media_root, youtube_id)
    except MediaError as exc:
        if logger.too_large:
            raise DownloadFailed(f"{url}: {logger.too_large} (MAX_DOWNLOAD_BYTES)") from exc
        got = media_root / f"{youtube_id}.{ext}"
        if ext and ext not in MEDIA_EXTENSIONS and got.exists():
            got.unlink()  # a format the pipeline cannot read; leave nothing half-usable behind
            raise DownloadFailed(f"{url}: got .{ext}, not one of {MEDIA_EXTENSIONS}") from exc
        raise DownloadFailed(f"{url}: yt-dlp reported success but {exc.reason}") from exc


def _stop_past(limit: int, url: str) -> Any:
    """A yt-dlp progress hook raising DownloadFailed once more than `limit` bytes came in."""

    def hook(progress: dict[str, Any]) -> None:
        if progress.get("status") == "downloading" and \
                (progress.get("downloaded_bytes") or 0) > limit:
            raise DownloadFailed(f"{url}: more than the {limit} bytes allowed "
                                 "(MAX_DOWNLOAD_BYTES); stopped")

    return hook


class _QuietLogger:
    """yt-dlp prints errors to stderr by default; the reason is recorded instead."""

    def __init__(self) -> None:
        self.too_large: str | None = None  # yt-dlp's "larger than max-filesize" line, if any

    def debug(self, msg: str) -> None:
        if "max-filesize" in msg:  # said on screen only: the download "succeeds" with no file
            self.too_large = _clean(msg)

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        pass


if __name__ == "__main__":
    import sys

    print(download_video(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:4]))
