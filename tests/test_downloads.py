"""Raw data from its sources: checksummed, placed atomically, through the mirror setting (never the internet)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import urllib.request
import zipfile

import pytest

from conftest import ROOT, SHARED_DATA, deepsweep_cli, http_folder, requires_shared
from deepsweep.data import downloads
from deepsweep.data.downloads import CATALOG, ensure
from deepsweep.errors import DataFileError, DownloadError


# Checksummed from the canonical repository (see data/downloads.py's CATALOG), not served offline: `deepsweep
# fetch citeseer pubmed` downloads them.
NOT_IN_THE_OFFLINE_MIRROR = {"citeseer", "pubmed"}


@requires_shared("mnist", "fashion_mnist", "planetoid", "sms_spam", "ecg200")
def test_catalog_checksums_match_the_offline_copies():
    """The catalog against ../shared/data (MNIST, Fashion-MNIST and Cora there are byte-identical to the
    canonical distributions; SMS Spam and ECG200 to copies of them, see the README's Data section)."""
    for name, dataset in CATALOG.items():
        if name in NOT_IN_THE_OFFLINE_MIRROR:
            continue
        for raw in dataset.files:
            path = SHARED_DATA / dataset.folder / raw.name
            assert (path.stat().st_size, downloads.file_sha256(path)) == (raw.size, raw.sha256), path


@requires_shared("ecg200")
def test_http_mirror_download_is_verified_and_atomic(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(SHARED_DATA / "ecg200", mirror / "ecg200")
    with http_folder(mirror) as (url, requested):
        placed = ensure("ecg200", tmp_path / "cache", mirror=url)
        assert [p.name for p in placed] == ["ECG200_TRAIN.txt", "ECG200_TEST.txt"]
        assert requested == ["/ecg200/raw/ECG200_TRAIN.txt", "/ecg200/raw/ECG200_TEST.txt"]
        for path in placed:
            assert path.read_bytes() == (SHARED_DATA / "ecg200/raw" / path.name).read_bytes()
            assert path.stat().st_mode & 0o777 == 0o644
        # Present and right: checked, not fetched again.
        ensure("ecg200", tmp_path / "cache", mirror=url)
        assert len(requested) == 2

        # A mirror serving other bytes: the file is named with both checksums, and nothing is left behind.
        corrupt = mirror / "ecg200/raw/ECG200_TEST.txt"
        corrupt.write_bytes(corrupt.read_bytes().replace(b"e-01", b"e-02", 1))
        got = hashlib.sha256(corrupt.read_bytes()).hexdigest()
        fresh = tmp_path / "fresh"
        with pytest.raises(DownloadError, match=rf"^{fresh}/ECG200_TEST.txt: downloaded from {url}/ecg200/raw/"
                                                rf"ECG200_TEST.txt with sha256 {got} \(155300 bytes\), expected "
                                                rf"907c243f6e.*; nothing was kept$"):
            ensure("ecg200", fresh, mirror=url)
        assert sorted(p.name for p in fresh.iterdir()) == ["ECG200_TRAIN.txt"]


def test_a_wrong_file_in_place_is_named_not_overwritten(tmp_path):
    (tmp_path / "SMSSpamCollection").write_text("ham\thello\n")
    with pytest.raises(DataFileError, match=rf"^{tmp_path}/SMSSpamCollection: 10 bytes, expected sha256 7d039a24"
                                            r".*\(477907 bytes\); delete it to download it again$"):
        ensure("sms_spam", tmp_path, mirror="http://127.0.0.1:9")
    assert (tmp_path / "SMSSpamCollection").read_text() == "ham\thello\n"


@requires_shared("sms_spam")
def test_a_local_folder_is_a_mirror_too(tmp_path):
    placed = ensure("sms_spam", tmp_path / "cache", mirror=str(SHARED_DATA))
    assert placed[0].read_bytes() == (SHARED_DATA / "sms_spam/raw/SMSSpamCollection").read_bytes()


@requires_shared("sms_spam")
def test_without_a_mirror_the_canonical_source_is_read_and_its_zip_unpacked(tmp_path, monkeypatch):
    """No mirror: the UCI zip is requested and the collection taken out of it (the network is faked here)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(SHARED_DATA / "sms_spam/raw/SMSSpamCollection", "SMSSpamCollection")
        zipped.writestr("readme", "SMS Spam Collection v.1")
    archive_file = tmp_path / "sms+spam+collection.zip"
    archive_file.write_bytes(archive.getvalue())
    requested, real_urlopen = [], urllib.request.urlopen

    def fake_urlopen(url, timeout):
        requested.append(url)
        return real_urlopen(archive_file.as_uri(), timeout=timeout)

    monkeypatch.delenv("DEEPSWEEP_DATA_MIRROR", raising=False)
    monkeypatch.setattr(downloads.urllib.request, "urlopen", fake_urlopen)
    placed = ensure("sms_spam", tmp_path / "cache")
    assert requested == ["https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"]
    assert placed[0].read_bytes() == (SHARED_DATA / "sms_spam/raw/SMSSpamCollection").read_bytes()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["SMSSpamCollection"]


def test_unreachable_source_is_one_line_naming_the_url(tmp_path):
    result = deepsweep_cli("fetch", "ecg200", "--override", f"data.root={tmp_path}/raw",
                           env={"DEEPSWEEP_DATA_MIRROR": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "deepsweep: error: http://127.0.0.1:9/ecg200/raw/ECG200_TRAIN.txt: cannot download ([Errno 111] Connection "
        f"refused); check $DEEPSWEEP_DATA_MIRROR (http://127.0.0.1:9), or place the file at {tmp_path}/raw/ECG200_TRAIN.txt")
    result = deepsweep_cli("fetch", "imagenet")
    assert result.returncode == 2
    assert result.stderr.strip() == ("deepsweep: error: fetch: unknown data set imagenet; allowed: "
                                     + ", ".join(CATALOG))


@requires_shared("ecg200")
def test_fetching_several_goes_past_one_that_fails_and_names_it(tmp_path, capsys):
    """The mirror has no CiteSeer: `deepsweep fetch` (every data set) stopped there and never fetched the rest."""
    from deepsweep.cli.main import main

    assert main(["fetch", "citeseer", "ecg200", "--override", f"data.root={tmp_path}/raw"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"ecg200: 2 file(s) verified in {tmp_path}/raw"]
    line = err.strip().splitlines()[-1]  # after the lines of the files it fetched
    assert line.startswith("deepsweep: error: fetch: 1 of 2 data sets verified; not fetched: citeseer (") and \
        "ind.citeseer" in line


@pytest.mark.slow  # 20-45 s here: started first, so it does not leave a worker alone at the end
@requires_shared("ecg200")
def test_dvc_fetches_a_pipelines_data_first_in_a_fresh_clone(project_copy, monkeypatch):
    """A clone has no data/: a ready-made pipeline (its own DVC project) starts with its fetch stage, whose
    output (the files' sha256) is prepare's dependency; prepare runs (and would fetch a missing file itself)."""
    shutil.copytree(ROOT / "pipelines" / "ecg_gru", project_copy / "pipelines" / "ecg_gru",
                    ignore=shutil.ignore_patterns("artifacts", "dvc.lock", "fetched.json", "tmp", "cache"))
    monkeypatch.setenv("DEEPSWEEP_ROOT", "")
    dvc = [str(ROOT / ".venv/bin/dvc") if (ROOT / ".venv/bin/dvc").exists() else "dvc", "--cd", "pipelines/ecg_gru"]
    assert not (project_copy / "data/ecg200").exists()
    dry = subprocess.run([*dvc, "repro", "--dry"], cwd=project_copy, capture_output=True, text=True)
    assert dry.stdout.startswith("Running stage 'fetch':\n> deepsweep fetch ecg200 --params params.yaml "
                                 "--manifest fetched.json"), dry.stdout
    done = subprocess.run([*dvc, "repro", "prepare"], cwd=project_copy, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (project_copy / "data/ecg200/raw/ECG200_TEST.txt").read_bytes() == \
        (SHARED_DATA / "ecg200/raw/ECG200_TEST.txt").read_bytes()
    manifest = json.loads((project_copy / "pipelines/ecg_gru/fetched.json").read_text())
    assert manifest["sha256"] == {raw.name: raw.sha256 for raw in CATALOG["ecg200"].files}
    assert (project_copy / "pipelines/ecg_gru/artifacts/prepare/meta.json").is_file()
    # data/ deleted (as in a clone whose fetch stage DVC finds up to date): prepare fetches the files itself.
    shutil.rmtree(project_copy / "data")
    again = subprocess.run([*dvc, "repro", "--force", "--single-item", "prepare"], cwd=project_copy,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (project_copy / "data/ecg200/raw/ECG200_TRAIN.txt").is_file()
