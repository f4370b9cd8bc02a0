"""The rosbag2 that `mtl3d replay` writes: ``DIR/output.mcap`` (+ ``metadata.yaml``), with each topic's QoS.

The inputs are copied with the QoS their bag offered (:func:`bag_index`); the outputs get the node's:
reliable, volatile, keep last ``topics.OUTPUT_QOS_DEPTH`` (``QOS_OUTPUT``: the defaults, not a run's
``qos_overrides``), and ``/diagnostics`` keep last ``topics.DIAGNOSTICS_QOS_DEPTH``. :func:`check_out_dir`
refuses an output folder that writing there would damage.
"""

from __future__ import annotations

import heapq
import shutil
from pathlib import Path
from typing import Any

import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from mtl3d_perception import topics
from mtl3d_perception.cli_args import check_output_folder
from mtl3d_perception.data.bag import BagError, typestore

OUTPUT_BAG = "output.mcap"


def _qos(depth: int) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, QosDurability.VOLATILE, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


QOS_OUTPUT = _qos(topics.OUTPUT_QOS_DEPTH)  # the node's default (ros.qos.OUTPUT_QOS): reliable, volatile
QOS_DIAGNOSTICS = _qos(topics.DIAGNOSTICS_QOS_DEPTH)


def _bag_files(metadata: Path) -> list[str]:
    """The storage files a rosbag2 ``metadata.yaml`` lists (empty when it cannot be read)."""
    try:
        info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
        return [str(f) for f in info["relative_file_paths"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []


def check_out_dir(out_dir: Path, bag: Path) -> None:
    """Refuse an output folder that replay would damage; an earlier replay's folder or any other folder is fine.

    Replay replaces only its own files in ``out_dir`` (``output.mcap``, ``metadata.yaml``, the report and
    pictures), so it must not be a file, the input bag itself, or another rosbag2's folder (whose
    ``metadata.yaml`` would be replaced).

    Raises:
        BagError: naming the folder and what it holds.
    """
    try:
        check_output_folder(out_dir)
    except NotADirectoryError as exc:
        raise BagError(str(exc)) from None
    if bag.resolve() in (out_dir.resolve(), (out_dir / OUTPUT_BAG).resolve()):
        raise BagError(f"output folder {out_dir} is where the input bag {bag} is; choose another output folder")
    metadata = out_dir / "metadata.yaml"
    if metadata.is_file() and (files := _bag_files(metadata)) != [OUTPUT_BAG]:
        held = ", ".join(files) if files else "an unreadable metadata.yaml"
        raise BagError(f"output folder {out_dir} holds another rosbag2 ({held}); replay would replace its "
                       f"metadata.yaml with its own {OUTPUT_BAG}'s; choose another output folder")


def bag_index(bag: Path) -> tuple[dict[str, int], dict[str, list[Qos]]]:
    """Message counts and offered QoS per topic from the bag's index (empty when the index cannot say)."""
    counts: dict[str, int] = {}
    qos: dict[str, list[Qos]] = {}
    try:
        with Reader(bag) as reader:
            for c in reader.connections:
                counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
                if getattr(c.ext, "offered_qos_profiles", None):
                    qos[c.topic] = list(c.ext.offered_qos_profiles)
    except Exception:  # only sizes the progress bar and copies QoS; read_bag reports real problems
        pass
    return counts, qos


class OutputBag:
    """The output rosbag2: written into a staging folder, then moved to ``DIR/output.mcap`` (+ metadata.yaml).

    Timestamps never go back: a message older than the last one written is written at the last one's time.
    :meth:`write_later` holds a message until the bag is written up to its log time (an output whose frame's pose
    comes from TF read ahead of the other messages is logged when that TF was recorded).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.staging = out_dir / ".output_staging"
        shutil.rmtree(self.staging, ignore_errors=True)
        for old in (out_dir / OUTPUT_BAG, out_dir / "metadata.yaml"):
            old.unlink(missing_ok=True)
        # the storage file is named after the bag folder: <staging>/output/output.mcap
        self.writer = Writer(self.staging / "output", version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.store = typestore()
        self.conns: dict[str, Any] = {}
        self.last_ns = 0
        self.counts: dict[str, int] = {}
        self._later: list[tuple[int, int, str, str, Any, Qos | list[Qos]]] = []  # a heap by (log time, order)
        self._order = 0

    def write_later(self, topic: str, msgtype: str, t_ns: int, msg: Any, qos: Qos | list[Qos]) -> None:
        """Write ``msg`` at log time ``t_ns`` once a message at or after it is written (or at :meth:`close`)."""
        self._order += 1
        heapq.heappush(self._later, (int(t_ns), self._order, topic, msgtype, msg, qos))

    def write(self, topic: str, msgtype: str, t_ns: int, msg: Any, qos: Qos | list[Qos]) -> None:
        """Write ``msg`` at log time ``t_ns`` (the held messages due by then first)."""
        while self._later and self._later[0][0] <= t_ns:
            self._flush_one()
        self._write(topic, msgtype, t_ns, msg, qos)

    def _flush_one(self) -> None:
        t_ns, _, topic, msgtype, msg, qos = heapq.heappop(self._later)
        self._write(topic, msgtype, t_ns, msg, qos)

    def _write(self, topic: str, msgtype: str, t_ns: int, msg: Any, qos: Qos | list[Qos]) -> None:
        if topic not in self.conns:
            profiles = qos if isinstance(qos, list) else [qos]
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store,
                                                           offered_qos_profiles=profiles)
        self.last_ns = max(self.last_ns, int(t_ns))
        self.writer.write(self.conns[topic], self.last_ns, self.store.serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        while self._later:
            self._flush_one()
        self.writer.close()
        bag_dir = self.staging / "output"
        shutil.move(str(bag_dir / OUTPUT_BAG), self.out_dir / OUTPUT_BAG)
        shutil.move(str(bag_dir / "metadata.yaml"), self.out_dir / "metadata.yaml")
        shutil.rmtree(self.staging, ignore_errors=True)
