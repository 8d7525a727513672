"""A real single-node SLURM on localhost for the tests: munge, MariaDB + slurmdbd, slurmctld, slurmd.

Needs root and Debian's packages; installs them with apt-get when they are missing. Every
daemon runs from a private folder (config, state, logs, database) and is stopped by its pid
file, so nothing of the machine's own SLURM setup (if any) is read or changed. Clients find
the cluster through ``SLURM_CONF``: pass ``cluster.env()`` to every subprocess.

    python tests/slurm_cluster.py start /tmp/slurm   # prints the export line for SLURM_CONF
    python tests/slurm_cluster.py stop /tmp/slurm
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
BINARIES = ["slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "mariadb-install-db", "sbatch", "sacct", "sacctmgr"]
CLUSTER = "linkstyle"
ACCOUNT = "linkstyle"
PARTITION = "debug"
DBD_PORT = 6819
PORTS = (6817, 6818, DBD_PORT)  # slurmctld, slurmd, slurmdbd
#: One test cluster per machine at a time: two test sessions (or xdist runs) take turns.
LOCK = Path("/tmp/linkstyle-test-slurm.lock")
LAST_ROOT = Path("/tmp/linkstyle-test-slurm.root")  # the folder of the cluster started last


class ClusterUnavailable(RuntimeError):
    """This machine cannot run a test cluster (not root, no apt-get, install failed)."""


def _run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def install_packages() -> None:
    """apt-get install Debian's SLURM, munge and MariaDB without starting any of them."""
    if all(shutil.which(b, path="/usr/sbin:/usr/bin:/sbin:/bin") for b in BINARIES):
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable("a real SLURM needs root to install and start its daemons; this user is not root")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("a real SLURM is installed from Debian's packages, but apt-get is not on this machine")
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:  # keep the maintainer scripts from starting munge or MariaDB
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        steps = [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]]
        for cmd in steps:
            proc = _run(cmd, timeout=600, env=env)
            if proc.returncode != 0:
                raise ClusterUnavailable(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")
    finally:
        if created:
            policy.unlink()


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


def _wait(what: str, check, timeout: float = 30.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise ClusterUnavailable(f"{what} did not come up within {timeout:.0f} s\n{tail}")


_LOCKS: dict[str, object] = {}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Cluster:
    """A running test cluster; ``root`` holds its config, state, logs and pid files."""

    root: Path
    node: str
    cpus: int
    memory_mb: int

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return dict(os.environ if base is None else base, SLURM_CONF=str(self.conf))

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return _run(list(cmd), timeout=timeout, env=self.env())

    def queue(self) -> list[dict[str, str]]:
        """Jobs SLURM still holds (pending or running), as dicts of id, name, state."""
        proc = self.run("squeue", "--noheader", "--format=%i|%j|%T|%k")
        return [dict(zip(("id", "name", "state", "comment"), line.split("|", 3))) for line in proc.stdout.splitlines() if line]

    def accounting(self) -> list[dict[str, str]]:
        """Every job (and attempt) sacct knows, oldest first."""
        proc = self.run("sacct", "--allusers", "--noheader", "--parsable2", "-X", "--starttime=now-1day",
                        "--format=JobID,JobName,State,WorkDir,Comment")
        return [dict(zip(("id", "name", "state", "workdir", "comment"), line.split("|", 4))) for line in proc.stdout.splitlines() if line]


def _write_configs(root: Path, node: str, cpus: int, memory_mb: int) -> None:
    etc = root / "etc"
    for sub in ("etc", "state", "spool", "log", "run", "db"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (etc / "slurm.conf").write_text(
        f"""ClusterName={CLUSTER}
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/slurmd-%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
MinJobAge=300
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={DBD_PORT}
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    )
    dbd = etc / "slurmdbd.conf"
    dbd.write_text(
        f"""AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={DBD_PORT}
SlurmUser=root
PidFile={root}/run/slurmdbd.pid
LogFile={root}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=root
StoragePort=3306
"""
    )
    dbd.chmod(0o600)


#: Where SLURM's clients look when SLURM_CONF is not set. The SLURM executor's job step clears
#: every SLURM_* variable (SLURM_CONF included) before its inner srun, so jobs find the cluster only here.
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


def _claim_default_config(conf: Path) -> None:
    if DEFAULT_CONF.is_symlink():
        DEFAULT_CONF.unlink()  # left by an earlier test cluster
    elif DEFAULT_CONF.exists():
        raise ClusterUnavailable(f"this machine has a SLURM config of its own at {DEFAULT_CONF}; the test cluster will not replace it")
    DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
    DEFAULT_CONF.symlink_to(conf)


def _munge_ok() -> bool:
    munge = _run(["munge", "-n"], timeout=10)
    return munge.returncode == 0 and _run(["unmunge"], input=munge.stdout, timeout=10).returncode == 0


def start_accounting(cluster: Cluster) -> None:
    """(Re)start slurmdbd; it reaches the private MariaDB through its socket (the client library reads MYSQL_UNIX_PORT)."""
    sock = cluster.root / "run" / "mysqld.sock"
    _run(["slurmdbd"], env=dict(cluster.env(), MYSQL_UNIX_PORT=str(sock)), timeout=30)
    _wait("slurmdbd", lambda: _port_open(DBD_PORT), log=cluster.root / "log" / "slurmdbd.log")


def start(root: str | Path) -> Cluster:
    """Install if needed, write the configs and start every daemon; return when the node is idle."""
    if sys.platform != "linux":
        raise ClusterUnavailable("the test cluster runs on Linux only")
    if os.geteuid() != 0:
        raise ClusterUnavailable("a real SLURM needs root to start its daemons; this user is not root")
    install_packages()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    lock = open(LOCK, "w")
    deadline = time.monotonic() + 1800
    while True:  # wait for another session's cluster to stop
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"another test cluster held {LOCK} for 30 minutes") from None
            time.sleep(1)
    _LOCKS[str(root)] = lock
    if LAST_ROOT.exists() and LAST_ROOT.read_text() != str(root):
        stop(LAST_ROOT.read_text())  # daemons a crashed earlier session left behind
    LAST_ROOT.write_text(str(root))
    busy = [p for p in PORTS if _port_open(p)]
    if busy:
        raise ClusterUnavailable(f"port(s) {busy} already in use: a SLURM that this test did not start is running here")
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    memory_mb = max(1000, _memory_mb() - 1024)
    _write_configs(root, node, cpus, memory_mb)
    _claim_default_config(root / "etc" / "slurm.conf")
    cluster = Cluster(root, node, cpus, memory_mb)
    (root / "cluster.json").write_text(json.dumps({"node": node, "cpus": cpus, "memory_mb": memory_mb}))

    if not _munge_ok():
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            _run(["mungekey", "--create"], timeout=30)
        for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, "munge", "munge")
        _run(["runuser", "-u", "munge", "--", "munged", "--force", "--pid-file=/run/munge/munged.pid"], timeout=30)
        (root / "run" / "munge.owned").write_text("/run/munge/munged.pid")
        _wait("munged", _munge_ok, timeout=15)

    db, sock = root / "db", root / "run" / "mysqld.sock"
    if not (db / "mysql").exists():
        proc = _run(["mariadb-install-db", f"--datadir={db}", "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"], timeout=120)
        if proc.returncode != 0:
            raise ClusterUnavailable(f"mariadb-install-db failed:\n{proc.stderr[-2000:]}")
    subprocess.Popen(
        ["mariadbd", f"--datadir={db}", "--user=root", "--skip-networking", f"--socket={sock}", f"--pid-file={root}/run/mariadbd.pid", f"--log-error={root}/log/mariadbd.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    _wait("MariaDB", sock.exists, log=root / "log" / "mariadbd.log")
    env = cluster.env()
    start_accounting(cluster)
    _run(["slurmctld", "-f", str(cluster.conf)], env=env, timeout=30)
    _wait("slurmctld", lambda: cluster.run("scontrol", "ping").returncode == 0, log=root / "log" / "slurmctld.log")
    _run(["slurmd", "-f", str(cluster.conf)], env=env, timeout=30)
    _wait("the node", lambda: "idle" in cluster.run("sinfo", "--noheader", "--format=%t").stdout, log=root / "log" / "slurmd.log")
    for cmd in (
        ["sacctmgr", "-i", "add", "account", ACCOUNT, f"Cluster={CLUSTER}", "Description=linkstyle tests", "Organization=linkstyle"],
        ["sacctmgr", "-i", "add", "user", "root", f"Account={ACCOUNT}", f"Cluster={CLUSTER}"],
    ):
        cluster.run(*cmd)
    return cluster


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


def stop(root: str | Path) -> None:
    """Cancel what is left and stop every daemon this folder started, in reverse order."""
    root = Path(root).resolve()
    env = dict(os.environ, SLURM_CONF=str(root / "etc" / "slurm.conf"))
    if shutil.which("scancel") and _alive(root / "run" / "slurmctld.pid"):
        try:
            _run(["scancel", "--user=root"], env=env, timeout=30)
        except subprocess.TimeoutExpired:
            pass  # a controller that does not answer has no jobs to give back; its daemons are stopped below
    pids = [root / "run" / f"{d}.pid" for d in ("slurmd", "slurmctld", "slurmdbd", "mariadbd")]
    owned = root / "run" / "munge.owned"
    if owned.exists():
        pids.append(Path(owned.read_text()))
    for pid_file in pids:
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    if DEFAULT_CONF.is_symlink() and DEFAULT_CONF.resolve() == (root / "etc" / "slurm.conf"):
        DEFAULT_CONF.unlink()
    lock = _LOCKS.pop(str(root), None)
    if lock is not None:
        lock.close()  # releases the flock


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    if sys.argv[1] == "start":
        c = start(sys.argv[2])
        print(f"export SLURM_CONF={c.conf}")
    else:
        stop(sys.argv[2])
