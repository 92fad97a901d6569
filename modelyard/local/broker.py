"""A local Apache Kafka broker, or a cluster of them (KRaft mode), for machines without Docker.

Jars come from Maven (infra/kafka/pom.xml); data lives in a project-local directory. Node 1 listens on the
host/port of `kafka.bootstrap_servers` and its controller on the next port; with `local_broker.brokers = N`,
node i listens two ports further on than node i-1 (9092/9093, 9094/9095, 9096/9097), every node is both
broker and controller (a three-voter quorum), internal topics are replicated on min(3, N) nodes and
`min.insync.replicas` is min(2, N): a write acknowledged by `acks=all` survives the loss of any one broker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from modelyard.core._exceptions import BrokerError
from modelyard.core.settings import KafkaSettings, LocalBrokerSettings

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners={protocol}://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners={protocol}://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,{protocol}:{protocol}
inter.broker.listener.name={protocol}
{sasl}log.dirs={log_dirs}
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=4
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
default.replication.factor={replicas}
min.insync.replicas={min_isr}
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
log.retention.hours=168
"""


# With kafka.security_protocol SASL_PLAINTEXT and mechanism PLAIN, the local broker accepts exactly the configured
# user (and talks to itself as that user), so the whole SASL path runs locally; the file stays in the data dir.
SASL_PLAIN_PROPERTIES = """\
sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \\
  required username="{user}" password="{password}" user_{user}="{password}";
"""


def parse_host_port(bootstrap_servers: str) -> tuple[str, int]:
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    return host or "127.0.0.1", int(port)


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalKafkaBroker:
    """Formats, starts and stops the local KRaft node(s); each node is broker and controller."""

    def __init__(self, config: LocalBrokerSettings, kafka: KafkaSettings) -> None:
        self.settings = config
        self.kafka = kafka
        self.host, self.port = parse_host_port(kafka.bootstrap_servers)
        self.data_dir = self.settings.data_dir.resolve()
        self.lib_dir = self.settings.home / "target" / "lib"
        self.nodes = list(range(1, self._node_count() + 1))

    def _node_count(self) -> int:
        """The configured count, or, left at 1, the count of the cluster already laid out in the data dir
        (so `status`, `down` and `broker stop` find every node of a cluster `up --brokers 3` started)."""
        saved = self.data_dir / "cluster.nodes"
        if self.settings.brokers == 1 and saved.exists():
            return int(saved.read_text().strip() or 1)
        return self.settings.brokers

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address (what clients of a cluster should list)."""
        return ",".join(f"{self.host}:{self.node_port(node)}" for node in self.nodes)

    def node_port(self, node: int) -> int:
        return self.port + 2 * (node - 1)

    def node_dir(self, node: int) -> Path:
        return self.data_dir if len(self.nodes) == 1 else self.data_dir / f"node-{node}"

    @property
    def pid_file(self) -> Path:
        return self.pid_file_of(1)

    def pid_file_of(self, node: int) -> Path:
        return self.node_dir(node) / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.node_dir(1) / "broker.log"

    def is_running(self) -> bool:
        return all(port_is_open(self.host, self.node_port(node)) for node in self.nodes)

    def started_here(self) -> bool:
        """True when the broker on the port is the one this data directory started (its pid is alive)."""
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return self.is_running()

    def describe(self) -> str:
        """Who runs the broker on the configured port, for messages."""
        if not self.is_running():
            return "not running"
        if self.started_here():
            return f"this checkout's broker (pid {self._pid()}, data in {self.data_dir})"
        return "a broker this checkout did not start"

    def ensure_jars(self) -> None:
        if any(self.lib_dir.glob("kafka_2.13-*.jar")):
            return
        if not shutil.which("mvn"):
            raise BrokerError(
                "Kafka jars are missing and Maven is not installed", hint="install Maven and Java 17+"
            )
        result = subprocess.run(
            ["mvn", "-q", "-B", "-Dstyle.color=never", "package"],
            cwd=self.settings.home,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BrokerError(
                f"fetching Kafka with Maven failed: {result.stdout[-500:]}{result.stderr[-500:]}"
            )

    def start(self) -> bool:
        """Start the node(s) unless they already listen; True when this call started them. Starts of the same
        port from several checkouts take turns (a lock file), so a loser sees the winner's broker instead
        of reporting its own, which could not bind the port, as started."""
        with _port_lock(self.port):
            return False if self.is_running() else self._launch()

    def _launch(self) -> bool:
        self.ensure_jars()
        cluster_id = self._cluster_id()
        if len(self.nodes) > 1:
            (self.data_dir / "cluster.nodes").write_text(str(len(self.nodes)))
        processes = {node: self._launch_node(node, cluster_id) for node in self.nodes}
        for node, process in processes.items():
            self._wait_until_ready(node, process)
        return True

    def _launch_node(self, node: int, cluster_id: str) -> subprocess.Popen[bytes]:
        self.node_dir(node).mkdir(parents=True, exist_ok=True)
        properties = self._write_properties(node)
        if not (self.node_dir(node) / "logs" / "meta.properties").exists():
            self._java(
                node, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties), check=True
            )
        process = self._java(node, "kafka.Kafka", str(properties))
        self.pid_file_of(node).write_text(str(process.pid))
        return process

    def _cluster_id(self) -> str:
        """One id for every node: the one already formatted on disk, else a new one (saved for the next start)."""
        saved = self.data_dir / "cluster.id"
        if not saved.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            saved.write_text(_cluster_id())
        return saved.read_text().strip()

    def start_node(self, node: int) -> None:
        """Restart one node of a running cluster (after kill_node/stop_node); returns once it listens."""
        process = self._java(node, "kafka.Kafka", str(self.node_dir(node) / "server.properties"))
        self.pid_file_of(node).write_text(str(process.pid))
        self._wait_until_ready(node, process)

    def kill_node(self, node: int, sig: int = signal.SIGKILL) -> None:
        """Signal one node: SIGKILL (a crash), SIGSTOP / SIGCONT (a hang and its end)."""
        pid = self._pid(node)
        if pid is None:
            raise BrokerError(f"node {node} has no pid file in {self.node_dir(node)}")
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            _wait_for_exit(pid, 30)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the node(s) this directory started; True when one was stopped."""
        stopped = False
        for node in self.nodes:
            stopped |= self._stop_node(node, timeout)
        return stopped

    def _stop_node(self, node: int, timeout: float) -> bool:
        pid = self._pid(node)
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGCONT)  # a node paused by a test must be able to act on the SIGTERM
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            self.pid_file_of(node).unlink(missing_ok=True)
            return False
        _wait_for_exit(pid, timeout)
        self.pid_file_of(node).unlink(missing_ok=True)
        return True

    def _pid(self, node: int = 1) -> int | None:
        try:
            return int(self.pid_file_of(node).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _write_properties(self, node: int) -> Path:
        path = self.node_dir(node) / "server.properties"
        protocol, sasl = self._client_security()
        voters = ",".join(f"{n}@{self.host}:{self.node_port(n) + 1}" for n in self.nodes)
        text = SERVER_PROPERTIES.format(
            node_id=node,
            voters=voters,
            host=self.host,
            port=self.node_port(node),
            controller_port=self.node_port(node) + 1,
            log_dirs=self.node_dir(node) / "logs",
            protocol=protocol,
            sasl=sasl,
            replicas=min(3, len(self.nodes)),
            min_isr=min(2, len(self.nodes)),
        )
        path.write_text(text)
        path.chmod(0o600)
        return path

    def _client_security(self) -> tuple[str, str]:
        """The client listener's protocol and its SASL lines: plain text, or SASL/PLAIN for the configured user."""
        kafka = self.kafka
        if kafka.security_protocol == "PLAINTEXT":
            return "PLAINTEXT", ""
        if kafka.security_protocol != "SASL_PLAINTEXT" or (kafka.sasl_mechanism or "").upper() != "PLAIN":
            raise BrokerError(
                f"the local broker speaks PLAINTEXT or SASL_PLAINTEXT with PLAIN, not {kafka.security_protocol}/{kafka.sasl_mechanism}",
                hint="use a real cluster for SSL or SCRAM, or set MODELYARD_KAFKA__SECURITY_PROTOCOL=PLAINTEXT",
            )
        if not kafka.sasl_username or kafka.sasl_password is None:
            raise BrokerError(
                "SASL_PLAINTEXT needs kafka.sasl_username and kafka.sasl_password", hint="set both"
            )
        password = kafka.sasl_password.get_secret_value()
        return "SASL_PLAINTEXT", SASL_PLAIN_PROPERTIES.format(user=kafka.sasl_username, password=password)

    def _java(self, node: int, main_class: str, *args: str, check: bool = False) -> subprocess.Popen[bytes]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java is not installed", hint="install a Java 17+ runtime")
        command = [
            java,
            f"-Xmx{self.settings.heap}",
            f"-Xms{self.settings.heap}",
            f"-Dlog4j2.configurationFile={self.settings.home / 'log4j2.properties'}",
            "-cp",
            f"{self.lib_dir}/*",
            main_class,
            *args,
        ]
        log = open(self.node_dir(node) / "broker.log", "ab")  # noqa: SIM115 - handed to the child process
        if check:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise BrokerError(f"{main_class} failed; see {self.node_dir(node) / 'broker.log'}")
            return None  # type: ignore[return-value]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_until_ready(self, node: int, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        log = self.node_dir(node) / "broker.log"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerError(f"Kafka node {node} exited with code {process.returncode}; see {log}")
            if port_is_open(self.host, self.node_port(node)):
                return
            time.sleep(0.2)
        raise BrokerError(
            f"Kafka node {node} did not accept connections on {self.host}:{self.node_port(node)} in time; see {log}"
        )


@contextlib.contextmanager
def _port_lock(port: int) -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / f"modelyard-broker-{port}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cluster_id() -> str:
    """A random Kafka cluster id. Like Kafka's own Uuid.randomUuid, never one starting with '-': the
    storage tool would read it as an option and fail (1 start in 64 did)."""
    import base64

    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cluster_id


def _wait_for_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        _reap(pid)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
