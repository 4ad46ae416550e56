"""Data file problems are named with the file (and line) in one line, exit code 2, before any training."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest

from conftest import SHARED_DATA, deepsweep_cli, requires_shared
from deepsweep.errors import DataFileError


def write_idx(path, array: np.ndarray, magic: bytes | None = None, compress=True) -> None:
    header = magic if magic is not None else struct.pack(">HBB", 0, 8, array.ndim)
    data = header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture
def idx_root(tmp_path):
    """A tiny, valid MNIST-layout folder: 40 training and 10 test images of 4x4 pixels."""
    root = tmp_path / "idx"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (40, 4, 4)))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(40) % 2)
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (10, 4, 4)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 2)
    return root


def load_idx(root):
    from deepsweep.data.sources import IdxImages

    return IdxImages(root=str(root)).load()


def test_the_tiny_folder_loads(idx_root):
    assert load_idx(idx_root).input_shape == (1, 4, 4)


def test_truncated_gzip_names_the_file(idx_root):
    path = idx_root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataFileError, match=rf"^{path}: not a complete gzip file"):
        load_idx(idx_root)


def test_wrong_idx_header_names_the_file(idx_root):
    path = idx_root / "t10k-labels-idx1-ubyte.gz"
    write_idx(path, np.arange(10), magic=b"\x00\x00\x0d\x01")
    with pytest.raises(DataFileError, match=rf"^{path}: not an unsigned-byte IDX file \(header 00000d01"):
        load_idx(idx_root)


def test_truncated_idx_body_names_the_file(idx_root):
    path = idx_root / "train-labels-idx1-ubyte.gz"
    data = gzip.decompress(path.read_bytes())[:-5]
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DataFileError, match=rf"^{path}: header says shape \(40,\) but holds 35 values"):
        load_idx(idx_root)


def test_image_label_count_mismatch_names_both_files(idx_root):
    write_idx(idx_root / "t10k-labels-idx1-ubyte.gz", np.arange(9) % 2)
    with pytest.raises(DataFileError, match=r"t10k-images-idx3-ubyte.gz: 10 images but t10k-labels-idx1-ubyte.gz has 9 labels"):
        load_idx(idx_root)


def test_missing_file_names_it(idx_root):
    (idx_root / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="data.root: missing IDX file.*t10k-images-idx3-ubyte.gz"):
        load_idx(idx_root)


def test_sms_non_utf8_and_malformed_lines_name_file_and_line(tmp_path):
    from deepsweep.data.sequences import SmsSpam

    path = tmp_path / "SMSSpamCollection"
    path.write_bytes(b"ham\thello there\nspam\tWIN \xff\xfe now\n")
    with pytest.raises(DataFileError, match=rf"^{path}:2: not UTF-8 text"):
        SmsSpam(root=str(tmp_path)).load()
    path.write_bytes(b"ham\thello there\nmaybe spam\n")
    with pytest.raises(DataFileError, match=rf"^{path}:2: expected '<ham\|spam>"):
        SmsSpam(root=str(tmp_path)).load()


def test_ecg_malformed_and_ragged_lines_name_file_and_line(tmp_path):
    from deepsweep.data.sequences import Ecg200

    (tmp_path / "ECG200_TRAIN.txt").write_text("1 0.1 0.2 0.3\n-1 0.2 x 0.4\n")
    (tmp_path / "ECG200_TEST.txt").write_text("1 0.1 0.2 0.3\n")
    with pytest.raises(DataFileError, match=rf"^{tmp_path / 'ECG200_TRAIN.txt'}:2: expected a label and numbers"):
        Ecg200(root=str(tmp_path)).load()
    (tmp_path / "ECG200_TRAIN.txt").write_text("1 0.1 0.2 0.3\n-1 0.2 0.4\n")
    with pytest.raises(DataFileError, match=r"ECG200_TRAIN.txt:2: 3 values where line 1 has 4"):
        Ecg200(root=str(tmp_path)).load()


@requires_shared("planetoid")
def test_corrupt_planetoid_file_names_the_folder(tmp_path):
    from deepsweep.data.graphs import Planetoid

    shutil.copytree(SHARED_DATA / "planetoid", tmp_path / "planetoid")
    raw = tmp_path / "planetoid" / "Cora" / "raw"
    (raw / "ind.cora.x").write_bytes(b"not a pickle")
    with pytest.raises(DataFileError, match=rf"^{raw}: a Planetoid file cannot be read"):
        Planetoid(root=str(tmp_path / "planetoid")).load()


def test_cli_reports_a_bad_data_file_in_one_line_with_exit_2(idx_root, tmp_path):
    """The IDX reader's own messages are checked above, source by source."""
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store.db'}"}
    # Named mnist, the folder must hold MNIST's published bytes: the checksum stops it first.
    result = deepsweep_cli("run", "data=mnist", f"data.root={idx_root}", "hydra.run.dir=out", cwd=tmp_path, env=env)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"deepsweep: error: {idx_root / 'train-images-idx3-ubyte.gz'}: ")
    assert "expected sha256 440fcabf73cc546f" in last and last.endswith("delete it to download it again")
    assert "Traceback" not in result.stderr
