"""``image_url`` values -> PIL images, within the server's limits.

Accepted: ``data:image/...;base64,...`` URLs. ``http(s)`` URLs are fetched only when their host is in
the allow-list (``--allow-fetch-host``); every other scheme (``file:``, paths, ...) is refused, so a
request can never make the server read its own disk or reach another machine by default. Sizes are
checked before decoding: the base64 length against ``max_image_bytes``, then the header's width x height
against ``max_image_pixels`` before any pixel is decompressed (decompression bombs).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings

from PIL import Image, UnidentifiedImageError

from internvl.serving.schemas import Limits, ServeError

DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.ASCII)
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
FETCH_TIMEOUT_S = 10.0


def _too_large(what: str, size: int, limits: Limits) -> ServeError:
    return ServeError(
        f"{what}: {size} bytes exceeds the image limit of {limits.max_image_bytes} bytes (--max-image-bytes)",
        status=413,
        code="image_too_large",
    )


def decode_image_url(url: str, limits: Limits, where: str = "image_url") -> Image.Image:
    """One ``image_url.url`` -> an RGB PIL image, or a `ServeError` (400 / 413) saying what is wrong."""
    if url.startswith("data:"):
        return decode_image_bytes(_data_url_bytes(url, limits, where), limits, where)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return decode_image_bytes(_fetch(url, limits, where), limits, where)
    shown = url if len(url) <= 60 else url[:60] + "..."
    raise ServeError(
        f"{where}: {shown!r} is not a data URL; send images as data:image/...;base64,... "
        "(http(s) URLs only with --allow-fetch-host)",
        param=where,
        code="invalid_image_url",
    )


def _data_url_bytes(url: str, limits: Limits, where: str) -> bytes:
    m = DATA_URL.match(url)
    if m is None or not m.group("b64"):
        raise ServeError(
            f"{where}: expected a base64 data URL (data:image/png;base64,...)", param=where, code="invalid_image_url"
        )
    mime = (m.group("mime") or "").lower()
    if mime and not mime.startswith("image/"):
        raise ServeError(
            f"{where}: data URL of type {mime!r}; expected an image/* type", param=where, code="invalid_image_url"
        )
    payload = url[m.end() :]
    if len(payload) * 3 // 4 > limits.max_image_bytes + 3:
        raise _too_large(where, len(payload) * 3 // 4, limits)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ServeError(
            f"{where}: the data URL's base64 payload is not valid base64", param=where, code="invalid_image"
        ) from None


def decode_image_bytes(data: bytes, limits: Limits, where: str = "image") -> Image.Image:
    """Encoded image bytes -> RGB PIL image, checking size, format and pixel count before decompressing."""
    if len(data) > limits.max_image_bytes:
        raise _too_large(where, len(data), limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
            w, h = im.size
            if w * h > limits.max_image_pixels:
                raise ServeError(
                    f"{where}: {w}x{h} = {w * h} pixels exceeds the limit of {limits.max_image_pixels} "
                    "(--max-image-pixels)",
                    status=413,
                    param=where,
                    code="image_too_large",
                )
            im.load()
            return im.convert("RGB")
    except ServeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ServeError(
            f"{where}: not a decodable image ({', '.join(FORMATS)}): {e}", param=where, code="invalid_image"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ServeError(
            f"{where}: the image data is corrupt or truncated: {e}", param=where, code="invalid_image"
        ) from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead off the allow-list: refuse it (urllib then raises an HTTPError)."""

    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


def _fetch(url: str, limits: Limits, where: str) -> bytes:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host not in {h.lower() for h in limits.allow_fetch_hosts}:
        raise ServeError(
            f"{where}: fetching images from {host or url!r} is disabled; send a data URL, or start the "
            "server with --allow-fetch-host " + (host or "HOST"),
            param=where,
            code="fetch_disabled",
        )
    try:
        opener = urllib.request.build_opener(_NoRedirect)
        with opener.open(
            urllib.request.Request(url, headers={"User-Agent": "internvl-serve"}), timeout=FETCH_TIMEOUT_S
        ) as resp:
            data = resp.read(limits.max_image_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ServeError(f"{where}: could not fetch {url}: {e}", param=where, code="fetch_failed") from None
    if len(data) > limits.max_image_bytes:
        raise _too_large(where, len(data), limits)
    return data
