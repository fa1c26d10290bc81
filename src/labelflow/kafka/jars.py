"""Apache Kafka's jars, fetched once from Maven Central into a per-user cache.

The ``kafka_2.13`` artifact pulls the whole broker transitively, but its POM lacks the logging
backend that the release tarball ships: without slf4j 1.7 + the log4j2 binding the broker logs
nothing at all, so a failed start would be undiagnosable. We add them explicitly, at the log4j
version each Kafka release was built with.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from labelflow.errors import SetupError

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

# Kafka version -> the log4j2 version its release tarball ships.
LOG4J_FOR_KAFKA = {
    "4.0.0": "2.24.3",
    "4.0.1": "2.24.3",
    "4.1.0": "2.24.3",
    "4.1.1": "2.24.3",
    "4.2.0": "2.25.3",
    "4.2.1": "2.25.4",
    "4.3.0": "2.25.4",
    "4.3.1": "2.25.4",
}

_COMPLETE_MARKER = ".complete"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.labelflow</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>1.7.36</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""


def libs_dir(cache_dir: Path, version: str) -> Path:
    """Where the jars of one Kafka version live (complete or not)."""
    return cache_dir / "kafka" / version / "libs"


def cached_libs(cache_dir: Path, version: str) -> Path | None:
    """The jar folder if a previous fetch completed, else None."""
    libs = libs_dir(cache_dir, version)
    return libs if (libs / _COMPLETE_MARKER).exists() else None


def ensure_jars(cache_dir: Path, version: str) -> Path:
    """Return the folder holding every runtime jar of Kafka ``version``, fetching it if needed.

    The fetch writes into a temporary sibling folder and renames it into place only when Maven
    succeeded, so an interrupted fetch never leaves a half-filled cache that looks complete.
    """
    cached = cached_libs(cache_dir, version)
    if cached:
        return cached
    log4j = LOG4J_FOR_KAFKA.get(version)
    if log4j is None:
        known = ", ".join(sorted(LOG4J_FOR_KAFKA))
        raise SetupError(
            f"Kafka {version} is not a version labelflow knows how to run.",
            hint=f"set LABELFLOW_KAFKA_VERSION to one of: {known}",
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SetupError(
            "Maven ('mvn') is needed once to fetch Apache Kafka's jars, and is not on PATH.",
            hint="install it (Debian/Ubuntu: sudo apt-get install maven), or point "
            "LABELFLOW_KAFKA_BOOTSTRAP at an existing cluster",
        )
    target = libs_dir(cache_dir, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(_POM.format(kafka=version, log4j=log4j))
        out = work / "libs"
        cmd = [
            mvn, "-B", "-q", "-f", str(work / "pom.xml"),
            f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={out}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any(out.glob("kafka_2.13-*.jar")):
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise SetupError(
                f"Fetching Apache Kafka {version} from Maven Central failed "
                f"(mvn exit {proc.returncode}):\n{tail}",
                hint="check that Maven Central is reachable (proxy settings in "
                "~/.m2/settings.xml), then run the command again",
            )
        (out / _COMPLETE_MARKER).write_text(version)
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target
