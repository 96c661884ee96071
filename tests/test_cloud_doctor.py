"""``sdcloud doctor`` findings on faked platforms. The machine facts a GPU-less test box cannot
show (nvidia-smi output, installed versions) come from a SystemProbe subclass; everything else
(paths, disks, stores, settings) is real under a tmp root."""

from __future__ import annotations

import errno
import os

import pytest

from sdcloud.cloud import doctor as doctor_mod
from sdcloud.cloud.doctor import run_doctor
from sdcloud.cloud.system import Gpu, SystemProbe
from sdcloud.settings import Settings


class FakeProbe(SystemProbe):
    def __init__(
        self,
        root,
        *,
        gpus=(),
        driver_cuda=None,
        versions=None,
        torch_cuda=None,
        ram=(83.0, 80.0),
        xformers_req=None,
    ):
        super().__init__(root)
        self._gpus, self._driver, self._versions = list(gpus), driver_cuda, dict(versions or {})
        self._torch_cuda, self._ram, self._xreq = torch_cuda, ram, xformers_req

    def gpus(self):
        return self._gpus

    def driver_cuda(self):
        return self._driver

    def version(self, dist):
        return self._versions.get(dist)

    def requirement(self, dist, on):
        return self._xreq if dist == "xformers" else None

    def torch_cuda_build(self):
        return self._torch_cuda

    def ram_gb(self):
        return self._ram


T4 = Gpu("Tesla T4", 15.0, "550.54.15")
A100 = Gpu("NVIDIA A100-SXM4-40GB", 40.0, "550.54.15")
GOOD = {"torch": "2.5.1+cu121", "numpy": "2.1.0", "diffusers": "0.42.1"}


def findings(report, level=None, topic=None):
    return [
        f
        for f in report.findings
        if (level is None or f.level == level) and (topic is None or f.topic == topic)
    ]


def test_free_looking_colab_without_drive_gets_every_warning_it_needs(tmp_path):
    (tmp_path / "content").mkdir()
    settings = Settings(data_dir=tmp_path / "content/sdcloud")
    probe = FakeProbe(
        tmp_path, gpus=[T4], driver_cuda="12.4", versions=GOOD, torch_cuda="12.1", ram=(12.7, 11.0)
    )
    report = run_doctor(settings, env={"COLAB_RELEASE_TAG": "r1"}, root=tmp_path, probe=probe)
    assert report.platform == "Google Colab"
    terms = " ".join(f.detail for f in findings(report, "warn", "terms"))
    assert "free tier does not allow Stable Diffusion web UIs" in terms and "never starts a tunnel" in terms
    assert findings(report, "warn", "storage")[0].fix.startswith("mount Google Drive")
    out = findings(report, "warn", "outputs")[0]
    assert "ephemeral" in out.detail and "/content/drive/MyDrive" in out.fix
    assert findings(report, "warn", "ram")
    assert findings(report, "ok", "gpu")[0].detail.startswith("Tesla T4, 15.0 GB VRAM")
    assert not findings(report, "error")
    assert report.worst == "warn"


def test_paid_colab_with_drive_and_outputs_on_drive_is_clean(tmp_path):
    drive = tmp_path / "content/drive/MyDrive"
    drive.mkdir(parents=True)
    settings = Settings(data_dir=drive / "sdcloud")
    probe = FakeProbe(tmp_path, gpus=[A100], driver_cuda="12.4", versions=GOOD, torch_cuda="12.1")
    report = run_doctor(settings, env={"COLAB_GPU": "1"}, root=tmp_path, probe=probe)
    assert findings(report, "info", "colab tier")
    assert not any("free tier does not allow" in f.detail for f in report.findings)
    assert findings(report, "ok", "outputs")[0].detail.endswith("is on persistent storage")
    assert [f.topic for f in findings(report, "warn")] == ["terms"]  # the no-tunnels rule still applies


@pytest.mark.parametrize(
    ("probe_kwargs", "needle"),
    [
        (
            {"driver_cuda": "12.2", "torch_cuda": "12.4"},
            "built for CUDA 12.4 but the driver supports only up to CUDA 12.2",
        ),
        ({"driver_cuda": "12.4", "torch_cuda": ""}, "torch is the CPU-only build"),
        (
            {"driver_cuda": "12.4", "torch_cuda": "12.1", "versions": {"torch": "2.1.2", "numpy": "2.0.1"}},
            "numpy 2.0.1 with torch 2.1.2",
        ),
        (
            {
                "driver_cuda": "12.4",
                "torch_cuda": "12.1",
                "versions": {**GOOD, "xformers": "0.0.23"},
                "xformers_req": "torch==2.1.2",
            },
            "xformers 0.0.23 was built for torch 2.1.2",
        ),
    ],
)
def test_known_bad_version_combinations_are_errors_with_a_fix(tmp_path, probe_kwargs, needle):
    kwargs = {"gpus": [T4], "versions": GOOD, **probe_kwargs}
    report = run_doctor(
        Settings(data_dir=tmp_path / "d"), env={}, root=tmp_path, probe=FakeProbe(tmp_path, **kwargs)
    )
    errors = findings(report, "error")
    assert any(needle in f.detail for f in errors), [f.detail for f in report.findings]
    assert all(f.fix for f in errors)


def test_paperspace_storage_and_a_dead_drive_style_mount(tmp_path, monkeypatch):
    (tmp_path / "storage").mkdir()
    (tmp_path / "notebooks").mkdir()
    dead = str(tmp_path / "notebooks")
    real_listdir = os.listdir

    # A FUSE mount that lost its daemon cannot be made here: os.listdir raising ENOTCONN is
    # what one looks like.
    def listdir(path):
        if str(path) == dead:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return real_listdir(path)

    monkeypatch.setattr(doctor_mod.os, "listdir", listdir)
    settings = Settings(data_dir=tmp_path / "storage/sdcloud")
    report = run_doctor(
        settings,
        env={"PAPERSPACE_FQDN": "x.paperspacegradient.com"},
        root=tmp_path,
        probe=FakeProbe(tmp_path, gpus=[A100], driver_cuda="12.4", versions=GOOD, torch_cuda="12.1"),
    )
    (err,) = findings(report, "error", "storage")
    assert "Transport endpoint is not connected" in err.detail and "remount" in err.fix
    assert findings(report, "ok", "outputs")
    assert any("port 6006" in f.detail or "6006" in f.detail for f in findings(report, "warn", "terms"))


def test_store_checks_stay_offline(tmp_path):
    probe = FakeProbe(tmp_path, versions=GOOD)
    store = tmp_path / "store"
    store.mkdir()
    ok = run_doctor(Settings(data_dir=tmp_path / "d", store=str(store)), env={}, root=tmp_path, probe=probe)
    assert findings(ok, "ok", "store")[0].detail.endswith("is writable")
    assert findings(ok, "ok", "outputs")  # synced by the outbox
    missing = run_doctor(
        Settings(data_dir=tmp_path / "d", store=str(tmp_path / "nope")), env={}, root=tmp_path, probe=probe
    )
    assert "does not exist" in findings(missing, "error", "store")[0].detail
    (tmp_path / "workspace").mkdir()
    ephemeral = tmp_path / "root-disk-store"
    ephemeral.mkdir()
    runpod = run_doctor(
        Settings(data_dir=tmp_path / "d", store=str(ephemeral)),
        env={"RUNPOD_POD_ID": "p"},
        root=tmp_path,
        probe=probe,
    )
    assert "ephemeral disk" in findings(runpod, "warn", "store")[0].detail
    hf = run_doctor(
        Settings(data_dir=tmp_path / "d", store="hf://me/outputs"),
        env={"HF_HOME": str(tmp_path)},
        root=tmp_path,
        probe=probe,
    )
    assert "token missing" in findings(hf, "error", "store")[0].detail
    hf = run_doctor(
        Settings(data_dir=tmp_path / "d", store="hf://me/outputs"),
        env={"HF_TOKEN": "hf_x"},
        root=tmp_path,
        probe=probe,
    )
    assert findings(hf, "ok", "store")


def test_real_probe_reads_versions_without_importing_torch():
    import sys

    probe = SystemProbe()
    had_torch = "torch" in sys.modules
    assert probe.version("torch")  # torch is installed in the test venv
    assert probe.torch_cuda_build() in ("", None) or probe.torch_cuda_build()[0].isdigit()
    assert ("torch" in sys.modules) == had_torch
    assert probe.version("surely-not-a-package-xyz") is None
    total, avail = probe.ram_gb()
    assert total >= avail > 0


def test_gpu_facts_come_from_nvidia_smi_output(tmp_path, monkeypatch):
    # No GPU here: a stand-in nvidia-smi prints what the real one prints for these two calls.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'if [ "$#" -gt 0 ]; then echo "NVIDIA H100 80GB HBM3, 81559, 550.54.15"; exit 0; fi\n'
        "echo '+-----------------------------------------------------------------------------------------+'\n"
        "echo '| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    probe = SystemProbe(tmp_path)
    (gpu,) = probe.gpus()
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.memory_gb == pytest.approx(79.6, abs=0.1)
    assert gpu.driver == "550.54.15" and probe.driver_cuda() == "12.4"
    smi.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2\n"
        "exit 9\n"
    )
    assert probe.gpus() == [] and probe.driver_cuda() is None
