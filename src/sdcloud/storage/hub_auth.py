"""Token checks before anything is uploaded to the Hugging Face Hub.

The trap: a read-only token gets a 404 ("repository not found") on upload, which reads like a
typo in the repo name. We ask ``whoami`` first and name the real cause.
"""

from __future__ import annotations

from typing import Any

from sdcloud.errors import StoreError

TOKENS_URL = "https://huggingface.co/settings/tokens"


def hub_error(exc: Exception, what: str) -> StoreError:
    """One line for any error huggingface_hub raised while doing ``what``; no token in it."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return StoreError(f"cannot {what}: HF_HUB_OFFLINE is set; unset it to use the Hub")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        code = exc.response.status_code
        if code == 401:
            return StoreError(f"cannot {what}: the Hugging Face token is invalid or expired; create a "
                              f"new write token at {TOKENS_URL} and set HF_TOKEN or run 'hf auth login'")
        if code == 403:
            return StoreError(f"cannot {what}: the Hub refused (403); the token lacks write access to "
                              f"this repo; create a write token at {TOKENS_URL}")
        if code == 404:
            return StoreError(f"cannot {what}: the Hub answered 404 (repo not found, or a read-only "
                              f"token); check the repo name and use a write token ({TOKENS_URL})")
        if code == 413:
            return StoreError(f"cannot {what}: the Hub refused the size (413); check the storage quota")
        return StoreError(f"cannot {what}: the Hub answered HTTP {code}")
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) or "Connect" in type(exc).__name__:
        return StoreError(f"cannot {what}: the Hugging Face Hub is unreachable ({type(exc).__name__})")
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    return StoreError(f"cannot {what}: {type(exc).__name__}: {first}")


def _fine_grained_can_write(auth: dict[str, Any], user: str, orgs: list[str], repo_id: str,
                            repo_type: str) -> bool:
    fine = auth.get("accessToken", {}).get("fineGrained") or {}
    namespace = repo_id.split("/")[0]
    if "repo.write" in (fine.get("global") or []):
        return True
    for scope in fine.get("scoped") or []:
        entity = scope.get("entity") or {}
        perms = scope.get("permissions") or []
        if "repo.write" not in perms:
            continue
        etype, ename = entity.get("type"), entity.get("name")
        if etype in ("user", "org") and ename == namespace and (etype == "org" or namespace == user):
            return True
        if etype == repo_type and ename == repo_id:
            return True
    return False


def check_write_token(api: Any, repo_id: str, repo_type: str = "model") -> str:
    """Return the user name if the effective token may write to ``repo_id``; else raise
    ``StoreError`` saying how to get one (log in, or create a write token)."""
    from huggingface_hub import get_token

    token = api.token or get_token()
    if not token:
        raise StoreError("no Hugging Face token: run 'hf auth login' with a write token or set HF_TOKEN "
                         f"(create one at {TOKENS_URL})")
    try:
        info = api.whoami(token=token)
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise hub_error(exc, "check the Hugging Face token") from None
    user = str(info.get("name", ""))
    orgs = [str(o.get("name")) for o in info.get("orgs") or []]
    auth = info.get("auth") or {}
    role = (auth.get("accessToken") or {}).get("role")
    if role == "read":
        raise StoreError(f"this Hugging Face token is read-only (the Hub answers 404 to its uploads); "
                         f"create a write token at {TOKENS_URL} and set HF_TOKEN")
    if role == "fineGrained" and not _fine_grained_can_write(auth, user, orgs, repo_id, repo_type):
        raise StoreError(f"this fine-grained Hugging Face token cannot write to {repo_id}; give it "
                         f"'Write access to contents' for that namespace or repo at {TOKENS_URL}")
    namespace = repo_id.split("/")[0]
    if namespace != user and namespace not in orgs:
        raise StoreError(f"the token belongs to '{user}', who cannot write to '{namespace}/...'; "
                         f"use hf://{user}/<repo> or a token of '{namespace}'")
    return user


def ensure_repo(api: Any, repo_id: str, repo_type: str) -> None:
    """Create ``repo_id`` (private) when it does not exist; say why not when that fails."""
    try:
        api.repo_info(repo_id, repo_type=repo_type)
        return
    except Exception as exc:  # noqa: BLE001
        from huggingface_hub.errors import RepositoryNotFoundError

        if not isinstance(exc, RepositoryNotFoundError):
            raise hub_error(exc, f"open {repo_type} repo {repo_id}") from None
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=True, exist_ok=True)
    except Exception as exc:  # noqa: BLE001
        raise hub_error(exc, f"create private {repo_type} repo {repo_id}") from None
