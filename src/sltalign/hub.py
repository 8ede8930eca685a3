"""Hub model ids without a network: fail at once, in one line, instead of after a minute of retries.

Model names that are hub ids (``hf:owner/name``, or a bare ``owner/name`` that is not a local path) are
downloaded by ``from_pretrained``. Without a network that retries for tens of seconds and ends in a traceback.
``check_hub_specs`` runs before any model loads: a hub id already in the local cache passes; otherwise the
hub is probed once per process (one TCP connection, a few seconds at most, none when ``HF_HUB_OFFLINE`` or
``TRANSFORMERS_OFFLINE`` is set) and an unreachable hub is one ``HubUnavailableError`` naming the model and
the local-directory alternative.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["HubUnavailableError", "hub_id", "hub_reachable", "check_hub_specs"]

# what the foundation loaders take as a bare hub id: "name" or "owner/name"
_BARE_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = ("1", "true", "yes", "on")
_reachable: bool | None = None


class HubUnavailableError(ValueError):
    """A hub model is needed but the hub cannot be reached and the model is not in the local cache."""


def hub_id(spec: object) -> str | None:
    """The hub id a model name refers to, or None (a packaged model, a local directory, anything else)."""
    if not isinstance(spec, str) or not spec:
        return None
    if spec.startswith("hf:"):
        return spec[3:] or None
    if ":" in spec or Path(spec).expanduser().exists():
        return None
    return spec if _BARE_ID.match(spec) else None


def offline_by_environment() -> bool:
    """True when the user said there is no network (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's endpoint accepts a TCP connection; probed once per process (cached), with the
    name lookup included in ``timeout`` (it runs in a daemon thread that is abandoned when it hangs)."""
    global _reachable
    if offline_by_environment():
        return False
    if _reachable is None:
        try:
            from huggingface_hub import constants

            url = urlparse(constants.ENDPOINT)
        except Exception:  # noqa: BLE001 - no hub client: nothing could be downloaded anyway
            _reachable = False
            return False
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
        result: list[bool] = []

        def probe() -> None:
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                result.append(True)
            except OSError:
                result.append(False)

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(timeout)
        _reachable = bool(result and result[0])
    return _reachable


def _in_cache(repo_id: str) -> bool:
    """Whether the model's config.json is in the local hub cache (then it loads without a network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an id the cache cannot even parse is not cached
        return False


def check_hub_specs(specs: Iterable[object], *, timeout: float = 3.0) -> None:
    """Raise ``HubUnavailableError`` for the first hub id among ``specs`` that cannot be had: not in the local
    cache while the hub is unreachable. Other names (packaged, directories) are not looked at."""
    for spec in specs:
        rid = hub_id(spec)
        if rid is None or _in_cache(rid):
            continue
        if not hub_reachable(timeout):
            why = "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set" if offline_by_environment() else "the model hub cannot be reached"
            raise HubUnavailableError(
                f"model {spec!r} is not available without a network ({why} and it is not in the local cache); "
                f"download it where there is a network (e.g. save_pretrained) and pass its local directory instead"
            )
