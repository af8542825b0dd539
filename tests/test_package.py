"""The package installs with ``pip install .`` into a fresh virtual environment and its commands run.

The fresh environment borrows the already-installed dependencies (a ``.pth`` file pointing at this
environment's site-packages) so that the test checks the packaging itself — metadata, package
discovery, console scripts — in seconds, without downloading torch again."""

import os
import site
import subprocess
import sys
import textwrap
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["msc-app", "msc-generate", "msc-evaluate", "msc-train", "msc-prepare-data", "msc-i3d"]


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)  # this environment's pip installs into it (--python)
    python = str(env_dir / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(purelib, "borrowed-dependencies.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    result = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-build-isolation",
                             "--no-index", "-q", ROOT],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return env_dir


def test_console_scripts_run_from_a_fresh_venv(fresh_env, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    runs = {script: subprocess.Popen([str(fresh_env / "bin" / script), "--help"], cwd=tmp_path, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE) for script in SCRIPTS}  # side by side
    for script, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "usage:" in out, f"{script}: {err[-3000:]}"


def test_the_installed_package_is_the_installed_copy(fresh_env, tmp_path):
    """Imported from the fresh environment's site-packages, not from this checkout."""
    code = "import msc.sampling, os; print(os.path.dirname(msc.sampling.__file__))"
    where = subprocess.run([str(fresh_env / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert where.startswith(str(fresh_env)) and not where.startswith(ROOT)


def test_importing_the_library_leaves_the_environment_alone():
    """Only a program's ``main()`` sets the offline variables (msc.environment); importing any module changes nothing."""
    code = ("import os; before = dict(os.environ); import msc.app, msc.evaluate, msc.generate, msc.train, msc.play_app, "
            "msc.flow, msc.world; changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != "
            "os.environ.get(k)); assert not changed, changed; from msc.environment import go_offline; go_offline(); "
            "import huggingface_hub; assert huggingface_hub.constants.is_offline_mode()")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "GRADIO_ANALYTICS_ENABLED")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=300)


def test_programs_keep_freed_memory_mapped_so_large_blocks_do_not_fault_again():
    """glibc's allocator gives the freed top of its heap, and every freed block above its mmap threshold, back to the
    kernel, so the next call that needs as much faults every page anew (an 8-frame forward of the bundled model: tens
    of thousands of faults); after ``keep_freed_memory()`` (what every program's ``main()`` calls) the same calls reuse
    mapped pages. Counted by the kernel (minor faults), in fresh processes, for bursts of 32 blocks of 1 MiB alive at
    once and then freed: with it, once two bursts have mapped the pages, the next 18 fault (almost) none. The baseline
    is glibc at its default thresholds held fixed (``MALLOC_MMAP_THRESHOLD_`` at glibc's own 128 KiB): left free, glibc
    moves them as blocks are freed, differently from one fresh process to the next (measured here: most processes
    fault all 8192 pages of every burst, some settle after two bursts), which made the contrast a coin toss. A user's
    own glibc variables are left in charge."""
    code = textwrap.dedent("""
        import resource, sys, torch
        from msc.environment import keep_freed_memory
        torch.set_num_threads(1)
        kept = keep_freed_memory() if sys.argv[1] == "keep" else None
        def burst():
            blocks = [torch.empty(1 << 18).fill_(1) for _ in range(32)]  # 32 x 1 MiB alive at once, freed on return
        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        burst()
        start = faults()
        for _ in range(2):
            burst()
        settled = faults()
        for _ in range(18):
            burst()
        print(kept, settled - start, faults() - settled)""")

    def faults(mode, **env):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, **env}, timeout=300).stdout.split()
        return out[0], int(out[1]), int(out[2])

    (_, default_first, default_after) = faults("default", MALLOC_MMAP_THRESHOLD_="131072")  # glibc's default, held
    (kept, keep_first, keep_after) = faults("keep")
    default, keeping = default_first + default_after, keep_first + keep_after
    assert kept == "True" and default > 5 * keeping and default >= 4000, (default, keeping)
    assert keep_after <= 64 and default_after >= 18 * 4096, (keep_after, default_after)  # 18 bursts of 8192 pages each
    assert faults("keep", MALLOC_TRIM_THRESHOLD_="131072")[0] == "False"
