"""Platform detection from faked environment markers and paths (a tmp root, never the real
/content), and the public-URL choice each platform implies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sdcloud.cloud.platforms import PROFILES, colab_tier_hint, detect, on_persistent_storage
from sdcloud.cloud.public_url import announce, choose_method, open_public_url, required_port
from sdcloud.errors import BadRequest, Unsupported


def _mk(root: Path, *dirs: str) -> Path:
    for d in dirs:
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return root


CASES = [
    ("colab", {"COLAB_RELEASE_TAG": "release-colab_20261101-060000_RC00"}, ["/content/drive/MyDrive"]),
    ("kaggle", {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, ["/kaggle/working"]),
    (
        "paperspace",
        {"PAPERSPACE_FQDN": "abc123.clg07azjl.paperspacegradient.com"},
        ["/storage", "/notebooks"],
    ),
    ("runpod", {"RUNPOD_POD_ID": "x1y2z3"}, ["/workspace"]),
    ("vast", {"VAST_CONTAINERLABEL": "C.12345"}, ["/workspace"]),
    ("studio-lab", {"USER": "studio-lab-user"}, ["/home/studio-lab-user"]),
]


@pytest.mark.parametrize(("pid", "env", "dirs"), CASES)
def test_each_platform_is_detected_from_its_env_marker(tmp_path, pid, env, dirs):
    _mk(tmp_path, *dirs)
    found = detect(env, tmp_path)
    assert found.id == pid
    assert found.evidence and found.evidence[0].startswith("env ")
    assert set(found.persistent_present) == set(dirs)


@pytest.mark.parametrize(
    ("pid", "marker"),
    [
        ("colab", "/content/sample_data"),
        ("kaggle", "/kaggle/working"),
        ("studio-lab", "/home/studio-lab-user"),
        ("lambda", "/etc/apt/sources.list.d/lambda-repository.list"),
        ("vast", "/etc/vast_boot.d"),
    ],
)
def test_path_markers_alone_identify_a_platform(tmp_path, pid, marker):
    target = tmp_path / marker.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir() if "." not in target.name else target.write_text("deb https://example/ jammy main\n")
    assert detect({}, tmp_path).id == pid


def test_plain_machine_is_a_vm_and_an_empty_env_is_not_colab(tmp_path):
    found = detect({"HOME": "/root", "PATH": "/usr/bin"}, tmp_path)
    assert found.id == "vm"
    assert found.profile.session_limit_hours is None


def test_profiles_state_persistence_limits_and_terms():
    colab = PROFILES["colab"]
    assert colab.session_limit_hours == 12 and not colab.tunnels_allowed
    assert any("free tier does not allow Stable Diffusion web UIs" in t for t in colab.terms)
    assert PROFILES["studio-lab"].session_limit_hours == 4
    pps = PROFILES["paperspace"]
    assert pps.public_url == "paperspace-6006" and not pps.tunnels_allowed
    assert any("prohibits tunnels" in t for t in pps.terms)
    assert "/storage" in pps.persistent and "/tmp" in pps.ephemeral


def test_outputs_on_ephemeral_colab_disk_are_flagged(tmp_path):
    _mk(tmp_path, "/content/drive/MyDrive", "/content/out")
    found = detect({"COLAB_GPU": "1"}, tmp_path)
    assert on_persistent_storage(tmp_path / "content/out", found, tmp_path) is False
    assert on_persistent_storage(tmp_path / "content/drive/MyDrive/sd/outputs", found, tmp_path) is True
    assert on_persistent_storage(tmp_path / "anything", detect({}, tmp_path), tmp_path) is None


def test_colab_tier_hint_never_claims_free():
    assert colab_tier_hint("NVIDIA A100-SXM4-40GB", 83.0) == "paid"
    assert colab_tier_hint("Tesla T4", 51.0) == "paid"  # High-RAM is paid-only
    assert colab_tier_hint("Tesla T4", 12.7) == "unknown"


# Public URL ---------------------------------------------------------------------------------
def test_paperspace_uses_its_6006_url_and_never_a_tunnel(tmp_path):
    env = {"PAPERSPACE_FQDN": "n1.paperspacegradient.com"}
    found = detect(env, tmp_path)
    assert required_port(found, 7860) == 6006
    url = choose_method(found, 7860, env)
    assert url.method == "paperspace-6006" and url.url == "https://tensorboard-n1.paperspacegradient.com"
    assert any("--port 6006" in n for n in url.notes)
    # Without the FQDN there is no platform proxy, and a tunnel is still not an option.
    assert choose_method(detect({"PAPERSPACE_CLUSTER_ID": "c"}, tmp_path), 6006, {}).method == "none"


def test_runpod_and_vast_urls_come_from_their_env(tmp_path):
    env = {"RUNPOD_POD_ID": "abc"}
    assert choose_method(detect(env, tmp_path), 7860, env).url == "https://abc-7860.proxy.runpod.net"
    env = {"VAST_CONTAINERLABEL": "C.1", "VAST_TCP_PORT_7860": "40123", "PUBLIC_IPADDR": "203.0.113.9"}
    url = choose_method(detect(env, tmp_path), 7860, env)
    assert url.method == "vast-port" and url.url == "http://203.0.113.9:40123"
    assert any("unencrypted" in n for n in url.notes)


def test_colab_uses_its_port_proxy_and_never_falls_back_to_a_tunnel(tmp_path):
    found = detect({"COLAB_GPU": "1"}, tmp_path)
    assert choose_method(found, 7860, {}, colab_available=True).method == "colab-proxy"
    assert choose_method(found, 7860, {}, colab_available=False).method == "none"


def test_vm_falls_back_to_gradio_share(tmp_path):
    # gradio is installed in this environment, so a VM gets its share link (not started here).
    assert choose_method(detect({}, tmp_path), 7860, {}).method == "gradio-share"


def test_public_url_requires_auth(tmp_path):
    with pytest.raises(BadRequest, match="needs auth"):
        open_public_url(detect({}, tmp_path), 7860, {}, auth=())
    # With auth but no way to publish on Studio Lab, the refusal says why.
    with pytest.raises(Unsupported, match="does not allow tunnels"):
        open_public_url(detect({"USER": "studio-lab-user"}, tmp_path), 7860, {}, auth=("a:b",))


def test_announce_prints_url_and_user_but_masks_a_given_password(tmp_path):
    env = {"RUNPOD_POD_ID": "abc"}
    url = choose_method(detect(env, tmp_path), 7860, env)
    text = announce(url, ["alice:s3cret-pass"])
    assert "https://abc-7860.proxy.runpod.net" in text and "alice" in text
    assert "s3cret-pass" not in text
    assert "s3cret-pass" in announce(url, ["alice:s3cret-pass"], reveal_password=True)


def test_cloudflared_url_is_read_from_its_log_and_the_tunnel_keeps_running(tmp_path, monkeypatch):
    from sdcloud.cloud import public_url

    # cloudflared itself needs the network; a stand-in prints the same log lines, then keeps logging.
    exe = tmp_path / "cloudflared"
    exe.write_text(
        "#!/bin/sh\n"
        "echo 'INF Requesting new quick Tunnel on trycloudflare.com...' >&2\n"
        "echo 'INF |  https://quiet-river-1234.trycloudflare.com  |' >&2\n"
        "i=0; while [ $i -lt 2000 ]; do\n"
        "  echo 'INF heartbeat log line to fill a pipe buffer' >&2; i=$((i+1))\n"
        "done\n"
        f"touch {tmp_path}/logged-all\n"
        "sleep 30\n"
    )
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    url, proc = public_url._start_cloudflared("127.0.0.1", 7860, timeout_s=10)
    try:
        assert url == "https://quiet-river-1234.trycloudflare.com"
        deadline = time.monotonic() + 10
        while not (tmp_path / "logged-all").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        # ~90 kB of log went through a 64 kB pipe: only a drained pipe lets it get this far.
        assert (tmp_path / "logged-all").exists() and proc.poll() is None
    finally:
        public_url.PublicUrl("cloudflared", url, 7860, process=proc).close()
    assert proc.poll() is not None
    exe.write_text("#!/bin/sh\necho 'ERR failed to request quick Tunnel' >&2\nsleep 5\n")
    with pytest.raises(Unsupported, match="did not report a URL"):
        public_url._start_cloudflared("127.0.0.1", 7860, timeout_s=0.5)
